"""`python -m benchmarks.costs`: where a single `request_lesson` spends its time, step by
step, in CPU microseconds of the client process (and wall time for the whole), next to
one plain INSERT of the same request. A fresh schema, dropped afterwards.

    python -m benchmarks.costs [--requests 3000] [--database-url URL]

Each step is timed on its own over the same requests (so the steps add up to about the
whole); what is left of the whole is the application's bookkeeping around `save()`.
A second table times the same steps one after another inside the request loop, as
`request_lesson` runs them: there each request first waits for the previous commit,
and every step comes back to cold caches.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.keys.keyfile import KEY_FILE_SETTING, ensure_keys
from benchmarks.stores import BaselineWriter, create_store, drop_store
from benchmarks.workload import requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.costs", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--database-url")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lesson-ledger-costs-") as folder:
        if KEY_FILE_SETTING not in os.environ:
            ensure_keys(Path(folder) / "keys.json")
            os.environ[KEY_FILE_SETTING] = str(Path(folder) / "keys.json")
        spec = create_store("postgresql", args.database_url)
        try:
            for line in measure(spec, args.requests):
                print(line)
        finally:
            drop_store(spec)
    return 0


def measure(spec: Any, count: int) -> list[str]:
    from adapters.eventstore import event_store, open_ledger
    from domain.commands import validate_request

    ledger = open_ledger(spec.ledger_url)
    store = event_store(ledger)
    writer = BaselineWriter(spec)
    try:
        items = [r.as_ledger_item() for r in requests("costs", 0, count)]
        warm = [r.as_ledger_item() for r in requests("costs-warm-up", 0, 50)]
        for item in warm:
            ledger.request_lesson(**item)
        commands = [validate_request(**item) for item in items]
        events = [[_decide(ledger, command)] for command in commands]
        stored = [[store.mapper.to_stored_event(e) for e in pair] for pair in events]
        steps: list[tuple[str, Callable[[int], object]]] = [
            ("validate the request (pydantic, key parsing)",
             lambda i: validate_request(**items[i])),
            ("lesson id (uuid5 of the key)", lambda i: commands[i].key.lesson_id),
            ("seal the students' parts, decide: the new slot's one event",
             lambda i: _decide(ledger, commands[i])),
            ("map + JSON-encode the event", lambda i: [
                store.mapper.to_stored_event(e) for e in events[i]]),
        ]  # fmt: skip
        lines = [f"{count} requests; CPU microseconds per request in the client process", ""]
        lines += ["| step | CPU us |", "| --- | --- |"]
        parts = 0.0
        for name, step in steps:
            cpu = _cpu_per_call(step, count)
            parts += cpu
            lines.append(f"| {name} | {cpu:.0f} |")
        recorder_ids = [_renamed(pair) for pair in stored]
        insert_cpu, insert_wall = _timed(
            lambda i: store.recorder.insert_events(recorder_ids[i]), count
        )
        parts += insert_cpu
        lines.append(
            f"| recorder.insert_events: libpq, one round trip (wall {insert_wall:.0f} us) "
            f"| {insert_cpu:.0f} |"
        )
        fresh = [r.as_ledger_item() for r in requests("costs-whole", 0, count)]
        whole_cpu, whole_wall = _timed(lambda i: ledger.request_lesson(**fresh[i]), count)
        lines.append(
            f"| the rest: the ledger's own steps, results (and colder caches) | "
            f"{max(0.0, whole_cpu - parts):.0f} |"
        )
        lines.append(
            f"| **request_lesson, whole** (wall {whole_wall:.0f} us) | **{whole_cpu:.0f}** |"
        )
        rows = requests("costs-baseline", 0, count)
        base_cpu, base_wall = _timed(lambda i: writer.insert(rows[i]), count)
        lines.append(f"| plain INSERT, whole (wall {base_wall:.0f} us) | {base_cpu:.0f} |")
        lines += ["", "The same steps one after another, inside the request loop:", ""]
        in_loop = [r.as_ledger_item() for r in requests("costs-loop", 0, count)]
        lines += _in_the_loop(ledger, in_loop)
        lines += ["", *_beside_a_busy_thread()]
        return lines
    finally:
        ledger.close()
        writer.close()


def _in_the_loop(ledger: Any, items: list[dict[str, Any]]) -> list[str]:
    """CPU microseconds of each step of a new-slot request, timed in sequence as the
    ledger runs them, request after request."""
    from adapters.eventstore import event_store
    from domain.commands import validate_request

    store = event_store(ledger)
    clock = time.process_time_ns
    names = ("validate", "seal + decide (the event)", "map + encode", "insert_events", "whole")
    spent = dict.fromkeys(names, 0)
    wall = time.perf_counter()
    for item in items:
        started = clock()
        command = validate_request(**item)
        validated = clock()
        event = _decide(ledger, command)
        decided = clock()
        stored = store.mapper.to_stored_event(event)
        mapped = clock()
        store.recorder.insert_events([stored])
        inserted = clock()
        for name, took in zip(
            names,
            (validated - started, decided - validated, mapped - decided, inserted - mapped,
             inserted - started),
            strict=True,
        ):  # fmt: skip
            spent[name] += took
    wall_us = (time.perf_counter() - wall) / len(items) * 1e6
    lines = [f"| step, in the loop (wall {wall_us:.0f} us a request) | CPU us |", "| --- | --- |"]
    lines += [f"| {name} | {spent[name] / len(items) / 1000:.0f} |" for name in names]
    return lines


def _renamed(pair: list[Any]) -> list[Any]:
    """The stored events again, under a fresh originator id (the recorder step must not
    collide with the events the whole-request step writes)."""
    fresh = uuid.uuid4()
    return [type(s)(fresh, s.originator_version, s.topic, s.state) for s in pair]


def _decide(ledger: Any, command: Any) -> Any:
    """What the ledger decides for a new slot: the fingerprint, the students' parts
    sealed, the opening event."""
    from domain.decisions import decide

    opened, _ = decide(ledger._sealed([command])[0], None)
    return opened


def _beside_a_busy_thread(calls: int = 200) -> list[str]:
    """Wall microseconds per call of the request path's C calls while another thread runs
    Python (a server's command threads, its event loop): a call that lets go of the GIL
    waits for that thread's switch interval to run again (decision records 0051, 0053)."""
    import hashlib
    import hmac
    import threading

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from adapters.randomness import random_bytes
    from domain.digests import KeyedBlake2b, KeyedHash, sha256

    key, nonce, text = os.urandom(32), os.urandom(12), os.urandom(3000)
    keyed, blake2b, cipher = KeyedHash(key), KeyedBlake2b(key), AESGCM(key)
    calls_of: list[tuple[str, Callable[[], object]]] = [
        ("48 random bytes, os.urandom (lets go of the GIL)", lambda: os.urandom(48)),
        ("48 random bytes, OpenSSL's generator (adapters/randomness.py)",
         lambda: random_bytes(48)),
        ("a student id's HMAC, hmac.digest (lets go of the GIL)",
         lambda: hmac.digest(key, b"student-1234", "sha256")),
        ("a student id's HMAC, a keyed copy (domain/digests.py)",
         lambda: keyed.hexdigest(b"student-1234")),
        ("SHA-256 of 3,000 bytes at once (lets go of the GIL)",
         lambda: hashlib.sha256(text).digest()),
        ("SHA-256 of 3,000 bytes in pieces (domain/digests.py)", lambda: sha256(text)),
        ("keyed BLAKE2b of 3,000 bytes at once (lets go of the GIL)",
         lambda: hashlib.blake2b(text, key=key, digest_size=32).hexdigest()),
        ("keyed BLAKE2b of 3,000 bytes in pieces (domain/digests.py: the fingerprint)",
         lambda: blake2b.hexdigest(text)),
        ("AES-GCM seal of 300 bytes", lambda: cipher.encrypt(nonce, text[:300], None)),
        ("AES-GCM seal of 3,000 bytes (lets go of the GIL; left so)",
         lambda: cipher.encrypt(nonce, text, None)),
    ]  # fmt: skip
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        walls = [(name, _timed(_ignoring_index(call), calls)[1]) for name, call in calls_of]
    finally:
        stop.set()
        thread.join()
    lines = ["The request path's C calls with another thread busy, wall us a call:", ""]
    lines += ["| call | wall us |", "| --- | --- |"]
    return lines + [f"| {name} | {wall:.1f} |" for name, wall in walls]


def _cpu_per_call(step: Callable[[int], object], count: int) -> float:
    return _timed(step, count)[0]


def _ignoring_index(call: Callable[[], object]) -> Callable[[int], object]:
    """A call as a step of `_timed`, which passes each step its index."""
    return lambda _: call()


def _timed(step: Callable[[int], object], count: int) -> tuple[float, float]:
    """CPU and wall microseconds per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(count):
        step(index)
    return (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )


if __name__ == "__main__":
    raise SystemExit(main())
