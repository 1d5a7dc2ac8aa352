"""The command path against the baseline, on the same requests: single requests on one
client, 8 concurrent clients (threads, and processes), batches, and a race for slots.

Each measurement alternates baseline and ledger turns, so both sides see the same
background load (the machine is shared); a rate is requests over the summed time of
its turns. Turns are short (`TURN_REQUESTS` a side per client; five batches), each
starting with the other side than the last: long rounds met this VM's drift at
different times and moved a ratio by 0.05-0.1 between runs. Worker processes are
spawned per round, so `concurrent_processes` keeps `rounds` long rounds. Concurrent
clients wait at a start line after connecting, so start-up is not timed; processes are
spawned, not forked (connection pools and threads do not survive a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from benchmarks.stores import BaselineWriter, StoreSpec
from benchmarks.workload import Request, requests

TURN_REQUESTS = 50
"""Requests a side sends per turn and client (a batch side: five batches a turn)."""

# A worker process's ledger needs one connection at a time; 8 of them must not take the
# shared server's connections (the library's default pool opens 5 each).
WORKER_ENV = {"POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "2"}


@dataclass
class Rate:
    """Requests done and the seconds they took, summed over rounds."""

    requests: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, requests: int, seconds: float, outcomes: Counter[str] | None = None) -> None:
        self.requests += requests
        self.seconds += seconds
        if outcomes:
            self.outcomes.update(outcomes)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# One client's work, in this process or in a worker process.


def _open_ledger(spec: StoreSpec) -> Any:
    from adapters.eventstore import open_ledger

    return open_ledger(spec.ledger_url)


def _ledger_single(ledger: Any, work: Sequence[Request]) -> Counter[str]:
    from domain import LessonConflict

    outcomes: Counter[str] = Counter()
    for request in work:
        try:
            outcomes[ledger.request_lesson(**request.as_ledger_item()).outcome] += 1
        except LessonConflict:
            outcomes["conflict"] += 1
        except Exception as error:  # counted and reported, never hidden
            outcomes[f"error: {type(error).__name__}: {str(error)[:80]}"] += 1
    return outcomes


def _ledger_batches(ledger: Any, work: Sequence[Request], size: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for start in range(0, len(work), size):
        items = [request.as_ledger_item() for request in work[start : start + size]]
        result = ledger.request_batch(items, batch_id=f"{work[start].request_id}-batch")
        outcomes.update(item.outcome for item in result.items)
    return outcomes


def _baseline_single(writer: BaselineWriter, work: Sequence[Request]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for request in work:
        outcomes["inserted" if writer.insert(request) else "unique violation"] += 1
    return outcomes


def _baseline_batches(writer: BaselineWriter, work: Sequence[Request], size: int) -> Counter[str]:
    for start in range(0, len(work), size):
        writer.insert_many(work[start : start + size])
    return Counter(inserted=len(work))


def _client(spec: StoreSpec, side: str) -> tuple[Any, Callable[[Sequence[Request]], Counter[str]]]:
    """A client of one side, and how it sends single requests."""
    if side == "ledger":
        ledger = _open_ledger(spec)
        return ledger, lambda work: _ledger_single(ledger, work)
    writer = BaselineWriter(spec)
    return writer, lambda work: _baseline_single(writer, work)


def _process_client(
    spec: StoreSpec, side: str, work: list[Request], ready: Any, start: Any, results: Any
) -> None:
    os.environ.update(WORKER_ENV)
    client, send = _client(spec, side)
    send(work[:1])  # connect and warm up (prepared statements, imports)
    ready.put(os.getpid())
    start.wait()
    began = time.monotonic()
    outcomes = send(work[1:])
    results.put((began, time.monotonic(), dict(outcomes)))
    client.close()


# Measurements.


def single(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """One client, one request per transaction: `ledger.request_lesson` vs one INSERT."""
    rates = {"baseline": Rate(), "ledger": Rate()}
    work = requests("single", 0, count)
    clients = {side: _client(spec, side) for side in rates}
    try:
        for _, send in clients.values():
            send(requests("single-warm-up", 0, 1))  # connect, prepare, import
        for number, chunk in enumerate(_chunks(work, turns_of(count, TURN_REQUESTS, rounds))):
            for side in in_turn(list(clients), number):
                began = time.perf_counter()
                outcomes = clients[side][1](chunk)
                rates[side].add(len(chunk), time.perf_counter() - began, outcomes)
    finally:
        for client, _ in clients.values():
            client.close()
    return rates


def concurrent_threads(spec: StoreSpec, count: int, clients: int, rounds: int) -> dict[str, Rate]:
    """`clients` threads: the baseline with a connection each, the ledger shared by all
    (one server process's shape)."""
    rates = {"baseline": Rate(), "ledger": Rate()}
    work = requests("threads", 0, count)
    ledger = _open_ledger(spec)
    writers = [BaselineWriter(spec) for _ in range(clients)]
    try:
        for number, round_ in enumerate(
            _chunks(work, turns_of(count, TURN_REQUESTS * clients, rounds))
        ):
            shares = _chunks(round_, clients)
            for side in in_turn(list(rates), number):
                sends: list[Callable[[Sequence[Request]], Counter[str]]] = (
                    [partial(_ledger_single, ledger)] * clients
                    if side == "ledger"
                    else [partial(_baseline_single, writer) for writer in writers]
                )
                seconds, outcomes = _run_threads(sends, shares)
                rates[side].add(len(round_), seconds, outcomes)
    finally:
        ledger.close()
        for writer in writers:
            writer.close()
    return rates


def concurrent_processes(spec: StoreSpec, count: int, clients: int, rounds: int) -> dict[str, Rate]:
    """`clients` processes, each with its own connection (baseline) or ledger."""
    rates = {"baseline": Rate(), "ledger": Rate()}
    per_round = count // rounds + clients  # each client's first request warms it up
    work = requests("processes", 0, per_round * rounds)
    for number in range(rounds):
        round_ = work[number * per_round : (number + 1) * per_round]
        for side in rates:
            seconds, outcomes = _run_processes(spec, side, _chunks(round_, clients))
            rates[side].add(len(round_) - clients, seconds, outcomes)
    return rates


def batches(spec: StoreSpec, count: int, size: int, rounds: int) -> dict[str, Rate]:
    """One client, `size` requests per transaction: `ledger.request_batch` vs `size` rows
    per transaction."""
    rates = {"baseline": Rate(), "ledger": Rate()}
    count = max(size * rounds, count - count % size)
    work = requests("batch", 0, count + size)
    ledger = _open_ledger(spec)
    writer = BaselineWriter(spec)
    try:
        _ledger_batches(ledger, work[count:], size)  # warm up
        _baseline_batches(writer, work[count:], size)
        sends = {
            "baseline": partial(_baseline_batches, writer),
            "ledger": partial(_ledger_batches, ledger),
        }
        count_of_turns = turns_of(count, 5 * size, rounds)
        per_turn = count // count_of_turns // size * size
        for number in range(count_of_turns):
            turn = work[number * per_turn : (number + 1) * per_turn]
            for side in in_turn(list(sends), number):
                began = time.perf_counter()
                outcomes = sends[side](turn, size)
                rates[side].add(len(turn), time.perf_counter() - began, outcomes)
    finally:
        ledger.close()
        writer.close()
    return rates


def race(spec: StoreSpec, slots: int, clients: int) -> dict[str, Rate]:
    """`clients` processes request the same `slots` lessons, each in its own order, each
    with its own request ids: the time until every slot is decided, and the outcomes."""
    rates = {}
    for side in ("baseline", "ledger"):
        shares = []
        for client in range(clients):
            work = requests("race", 0, slots + 1)  # the last one: each client's warm-up
            work[-1] = requests(f"race-warm-{client}", 0, 1)[0]
            mine = [
                Request(
                    r.provider_id,
                    r.school_id,
                    r.lesson_date,
                    r.time_slot,
                    f"{r.request_id}-client-{client}",
                )
                for r in work[:-1]
            ]
            random.Random(client).shuffle(mine)
            shares.append([work[-1], *mine])
        seconds, outcomes = _run_processes(spec, side, shares)
        rate = Rate()
        rate.add(slots, seconds, outcomes)
        rates[side] = rate
    return rates


# Running clients.


def _run_threads(
    sends: Sequence[Callable[[Sequence[Request]], Counter[str]]],
    shares: Sequence[Sequence[Request]],
) -> tuple[float, Counter[str]]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(len(sends) + 1)

    def run(send: Callable[[Sequence[Request]], Counter[str]], share: Sequence[Request]) -> None:
        barrier.wait()
        done = send(share)
        with lock:
            outcomes.update(done)

    threads = [
        threading.Thread(target=run, args=(send, share))
        for send, share in zip(sends, shares, strict=True)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, outcomes


def _run_processes(
    spec: StoreSpec, side: str, shares: Sequence[list[Request]]
) -> tuple[float, Counter[str]]:
    """One client process of `side` per share (see `run_together`)."""
    return run_together(_process_client, [(spec, side, share) for share in shares])


def run_together(
    target: Callable[..., None], arguments: Sequence[tuple[Any, ...]]
) -> tuple[float, Counter[str]]:
    """Start one spawned process per argument tuple, `target(*arguments, ready, start,
    results)`; wait until each has put its pid on `ready` (connected, warmed up), start
    them together, and return the seconds from the start until the last one finished,
    and their outcomes added up (each puts `(began, ended, outcomes)` on `results`)."""
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=target, args=(*args, ready, start, results), daemon=True)
        for args in arguments
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=300)
        began = time.monotonic()
        start.set()
        finished = [results.get(timeout=3600) for _ in processes]
    finally:
        for process in processes:
            process.join(60 if start.is_set() else 0)  # unstarted ones would wait forever
            if process.is_alive():
                process.kill()
    outcomes: Counter[str] = Counter()
    for _, _, done in finished:
        outcomes.update(done)
    return max(end for _, end, _ in finished) - began, outcomes


def turns_of(count: int, per_turn: int, rounds: int) -> int:
    """Turns of about `per_turn` requests a side, at least `rounds`."""
    return max(rounds, count // per_turn)


def in_turn(sides: list[str], number: int) -> list[str]:
    """The sides in turn `number`'s order: each turn starts with the next side."""
    first = number % len(sides)
    return sides[first:] + sides[:first]


def _chunks(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` in `parts` consecutive chunks of (nearly) equal size."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out
