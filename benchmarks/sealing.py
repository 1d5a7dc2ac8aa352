"""What sealing students' details costs the command path and generation (issue 13's
target: no ratio drops by more than 0.05).

The ledger as it runs (every student's part sealed, prints keyed) against the same
ledger with sealing taken out: the parts kept as sent and the prints unkeyed, as the
ledger wrote them before sealing. Both against the same plain INSERTs, on single
requests from one client, from 8 threads (the ledger shared, as in a server process) and
in batches: the three sides take turns, in a different order each turn, each on requests
of its own. A side's rate is its requests over the summed seconds of its turns; the drop
is the plain ledger's ratio minus the sealed one's. Turns are short (`TURN_REQUESTS` a
side, per client): three long rounds each met the VM's drift at a different time and
moved the drop by as much as its target between runs; short turns meet it alike.
`make bench` gives each side more requests here than in its other write measurements (2x
single, 4x threaded, 10x batched).

The workload's requests all name the same two students, whose keys stay in the
process's cache. `single_known` names two students of its own in each request, whose
keys are in the process's keys' directory (decision records 0055, 0057): every request
unwraps them from it, as when a process meets a student for the first time.
`single_uncached` does the same in a process that holds no directory and hears of no
erasure (a forked child, or a listener's session lost; on SQLite or through a pooler
alone, the first meeting of each student in a process, decision records 0054, 0067):
every request looks them up. `single_new` names two students new to the ledger
in each request: every request makes their keys, stored by the request's own append
(decision record 0064).

`generation` is the ledger's part of the worker's: each lesson read, its students' parts
opened for the prompt, and its result recorded, the content sealed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from functools import partial
from typing import Any
from uuid import UUID

from benchmarks.stores import BaselineWriter, StoreSpec
from benchmarks.workload import Request, requests
from benchmarks.writes import (
    TURN_REQUESTS,
    Rate,
    _baseline_batches,
    _baseline_single,
    _chunks,
    _ledger_batches,
    _ledger_single,
    _run_threads,
    in_turn,
    turns_of,
)

SIDES = ("baseline", "plain", "sealed")
Send = Callable[[Sequence[Request]], Counter[str]]


class PlainStudentData:
    """The `StudentData` port with sealing taken out: parts kept as sent (in the form the
    ledger reads as written before sealing), prints unkeyed. For this measurement only."""

    def __init__(self, sealer: Any) -> None:
        self._sealer = sealer

    @property
    def print_key(self) -> bytes:
        return b""

    def seal_students(self, requests: Sequence[tuple[Any, list[Any]]]) -> list[list[Any]]:
        from domain.sealed import PLAIN

        return [[{PLAIN: part} for part in parts] for _, parts in requests]

    def open_students(self, lesson_id: UUID, sealed: Sequence[Any]) -> list[Any]:
        return list(self._sealer.open_students(lesson_id, sealed))

    def seal_content(
        self, lesson_id: UUID, lesson_date: date, students: Sequence[Any], content: Any
    ) -> Any:
        from domain.sealed import PLAIN

        return {PLAIN: content}

    def open_content(self, lesson_id: UUID, sealed: Any) -> Any:
        return self._sealer.open_content(lesson_id, sealed)

    def close(self) -> None:
        self._sealer.close()


def _ledger(spec: StoreSpec, sealed: bool) -> Any:
    from adapters.eventstore import open_ledger
    from domain import LessonLedger

    ledger = open_ledger(spec.ledger_url)
    if sealed:
        return ledger
    return LessonLedger(
        ledger.slots, PlainStudentData(ledger.student_data), ledger.invalid_requests
    )


def holds_directory(spec: StoreSpec) -> bool:
    """Whether a ledger on this store hears of erasures, and so holds a keys' directory."""
    from adapters.storage.database import Database

    return Database.from_url(spec.ledger_url).session is not None


def single(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """One client, one request per transaction, each side in turn."""
    return _single(spec, "sealing-single", count, rounds)


def single_known(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """As `single`, each request naming two students of its own, whose keys are in the
    process's directory but not its cache: every request unwraps their keys."""
    return _single(spec, "sealing-known", count, rounds, students="known")


def single_uncached(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """As `single`, each request naming two students of its own, with keys made but not
    cached, in a process that holds no directory: every request looks them up."""
    return _single(spec, "sealing-uncached", count, rounds, students="uncached")


def single_new(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """As `single`, each request naming two students new to the ledger, in a process
    whose directory holds every key: every request makes theirs, which its append
    stores."""
    return _single(spec, "sealing-new", count, rounds, students="new")


def _single(
    spec: StoreSpec, run: str, count: int, rounds: int, students: str = ""
) -> dict[str, Rate]:
    turns = turns_of(count, TURN_REQUESTS, rounds)
    return _alternating(spec, run, count, turns, _one_at_a_time, students=students)


def _one_at_a_time(clients: dict[str, Any]) -> dict[str, Send]:
    return {
        "baseline": lambda work: _baseline_single(clients["baseline"][0], work),
        "plain": lambda work: _ledger_single(clients["plain"], work),
        "sealed": lambda work: _ledger_single(clients["sealed"], work),
    }


def threads(spec: StoreSpec, count: int, clients: int, rounds: int) -> dict[str, Rate]:
    """`clients` threads, one request per transaction: a connection each for the
    baseline, one ledger shared by all."""

    def together(senders: list[Send]) -> Send:
        return lambda work: _run_threads(senders, _chunks(work, clients))[1]

    def sends(made: dict[str, Any]) -> dict[str, Send]:
        return {
            "baseline": together([partial(_baseline_single, w) for w in made["baseline"]]),
            "plain": together([partial(_ledger_single, made["plain"])] * clients),
            "sealed": together([partial(_ledger_single, made["sealed"])] * clients),
        }

    turns = turns_of(count, TURN_REQUESTS * clients, rounds)
    return _alternating(spec, "sealing-threads", count, turns, sends, writers=clients)


def batches(spec: StoreSpec, count: int, size: int, rounds: int) -> dict[str, Rate]:
    """One client, `size` requests per transaction, each side in turn."""

    def sends(clients: dict[str, Any]) -> dict[str, Send]:
        return {
            "baseline": lambda work: _baseline_batches(clients["baseline"][0], work, size),
            "plain": lambda work: _ledger_batches(clients["plain"], work, size),
            "sealed": lambda work: _ledger_batches(clients["sealed"], work, size),
        }

    count = max(count, size * rounds)
    return _alternating(spec, "sealing-batch", count, turns_of(count, 5 * size, rounds), sends)


def generation(spec: StoreSpec, count: int, rounds: int) -> dict[str, Rate]:
    """The ledger's part of generating a lesson, one at a time, as the worker does it: the
    lesson read (its students' parts opened for the prompt), then the result recorded (the
    content sealed under a key of its own, wrapped by each student's and the day's). The
    lessons are requested before the turns; the model's part (the template's lesson, the
    same for every lesson) is made before them too. The baseline is `single`'s INSERTs."""
    generated: dict[str, Any] = {}

    def prepare(clients: dict[str, Any], work: dict[str, list[Request]]) -> None:
        for side in ("plain", "sealed"):
            ledger = clients[side]
            _ledger_batches(ledger, work[side], 100)
            if not generated:
                generated.update(_template_lesson(ledger, work[side][0]))

    def recorder(ledger: Any) -> Send:
        return lambda work: _record_generated(ledger, work, generated)

    def sends(clients: dict[str, Any]) -> dict[str, Send]:
        return {
            "baseline": lambda work: _baseline_single(clients["baseline"][0], work),
            "plain": recorder(clients["plain"]),
            "sealed": recorder(clients["sealed"]),
        }

    turns = turns_of(count, TURN_REQUESTS, rounds)
    return _alternating(spec, "sealing-generation", count, turns, sends, prepare=prepare)


def _template_lesson(ledger: Any, request: Request) -> dict[str, Any]:
    """The template generator's lesson for a requested lesson: its content and model."""
    from adapters.generators.template import TemplateGenerator
    from projections.generation.port import GenerationRequest

    state = ledger.get_lesson(request.lesson_id)
    lesson = TemplateGenerator().build(GenerationRequest.from_state(state))
    return {"content": lesson.content(), "model": lesson.metadata.model}


def _record_generated(
    ledger: Any, work: Sequence[Request], generated: dict[str, Any]
) -> Counter[str]:
    """Each requested lesson read, then its generated lesson recorded."""
    outcomes: Counter[str] = Counter()
    content, model = generated["content"], generated["model"]
    for request in work:
        lesson_id = request.lesson_id
        try:
            state = ledger.get_lesson(lesson_id)
            result = ledger.record_generation(
                lesson_id=lesson_id, attempt=state.attempt, content=content, model=model
            )
            outcomes[result.outcome] += 1
        except Exception as error:  # counted and reported, never hidden
            outcomes[f"error: {type(error).__name__}: {str(error)[:80]}"] += 1
    return outcomes


def _alternating(
    spec: StoreSpec,
    run: str,
    count: int,
    turns: int,
    sends_of: Callable[[dict[str, Any]], dict[str, Send]],
    writers: int = 1,
    students: str = "",
    prepare: Callable[[dict[str, Any], dict[str, list[Request]]], None] | None = None,
) -> dict[str, Rate]:
    """`count` requests per side in `turns` turns, each led by the next side.
    The baseline's side is `writers` connections, each ledger's one ledger. With
    `students` ("known", "uncached" or "new"), each request names two students of its
    own, whose keys the sealed ledger has made and forgotten (but for its directory), or
    has not made ("new"). `prepare` is given the clients and every request each side
    will send (its warm-up's first) before any is sent."""
    baseline = [BaselineWriter(spec) for _ in range(writers)]
    clients: dict[str, Any] = {
        "baseline": baseline,
        "plain": _ledger(spec, sealed=False),
        "sealed": _ledger(spec, sealed=True),
    }
    rates = {side: Rate() for side in SIDES}

    def work_of(side: str) -> list[Request]:
        made = requests(f"{run}-{side}", 0, count)
        if students:
            made = [replace(r, students=(f"{r.request_id}/a", f"{r.request_id}/b")) for r in made]
        return made

    every = {side: work_of(side) for side in SIDES}
    work = {side: _chunks(every[side], turns) for side in SIDES}
    warm_up = {side: requests(f"{run}-{side}-warm-up", 0, 100) for side in SIDES}
    try:
        if prepare is not None:
            prepare(clients, {side: warm_up[side] + every[side] for side in SIDES})
        sends = sends_of(clients)
        for side, send in sends.items():
            send(warm_up[side])  # connect, prepare, make keys
        if students == "new":
            _directory_read(clients["sealed"].student_data.keys)
        elif students:
            named = [r for w in work["sealed"] for r in w]
            _keys_made_and_forgotten(clients["sealed"], named, in_directory=students == "known")
        for number in range(turns):
            for side in in_turn(list(SIDES), number):
                began = time.perf_counter()
                outcomes = sends[side](work[side][number])
                rates[side].add(len(work[side][number]), time.perf_counter() - began, outcomes)
    finally:
        for writer in baseline:
            writer.close()
        clients["plain"].close()
        clients["sealed"].close()
    return rates


def _keys_made_and_forgotten(ledger: Any, work: list[Request], *, in_directory: bool) -> None:
    """Make the keys of the students `work` names, as their earlier lessons did; then
    read the ledger's directory afresh, as a process started after those lessons would
    have (`in_directory`), or have it hold none (as on SQLite, or through a pooler
    alone): either way none of them is cached."""
    keys = ledger.student_data.keys
    owners = [ledger.student_data.student_owner(s) for r in work for s in r.students]
    for start in range(0, len(owners), 1000):
        keys.keys_for(owners[start : start + 1000])
    if in_directory:
        _directory_read(keys)
    else:
        keys.told(False)  # no erasures heard of, so no directory, and nothing kept


def _directory_read(keys: Any) -> None:
    """Wait for the ledger's listener, then read its directory afresh, forgetting every
    key cached, as at a process's start."""
    deadline = time.monotonic() + 10
    while not keys.told_of_erasures and time.monotonic() < deadline:
        time.sleep(0.01)  # the listener's first LISTEN, just after the ledger opened
    keys.heard()
    if not keys.read_directory():
        raise RuntimeError("no keys' directory here (erasures are not heard of)")


def figures(name: str, rates: dict[str, Rate]) -> dict[str, Any]:
    """`sealing_<name>_*`: each side's rate, each ledger's ratio, and the drop."""
    baseline = rates["baseline"].per_second
    ratios = {side: rates[side].per_second / baseline for side in ("plain", "sealed")}
    return {
        f"sealing_{name}_per_s": {side: rate.per_second for side, rate in rates.items()},
        f"sealing_{name}_outcomes": {side: dict(rate.outcomes) for side, rate in rates.items()},
        f"sealing_{name}_ratios": ratios,
        f"sealing_{name}_drop": ratios["plain"] - ratios["sealed"],
    }


def table_rows(f: dict[str, Any], target: Callable[[str], str]) -> list[tuple[str, ...]]:
    """A row per measurement: the sealed ledger's rate and ratio, the plain one's, the drop."""
    rows: list[tuple[str, ...]] = []
    labels = {
        "single": "single requests",
        "single_known": "single requests, students' keys in the directory, not cached",
        "single_uncached": "single requests, students' keys looked up (no directory)",
        "single_new": "single requests, students new to the ledger (keys made)",
        "threads": f"{f['clients']} threads",
        "batch": f"batches of {f['batch_size']}",
        "generation": "generation, a lesson read and its result recorded",
    }
    for name, label in labels.items():
        if f"sealing_{name}_drop" not in f:
            continue
        rates, ratios = f[f"sealing_{name}_per_s"], f[f"sealing_{name}_ratios"]
        rows.append((
            f"sealing's cost, {label} (req/s; sealed / without sealing; ratio drop)",
            f"{rates['sealed']:,.0f} / {rates['plain']:,.0f}",
            f"{rates['baseline']:,.0f}",
            f"{ratios['sealed']:.2f} / {ratios['plain']:.2f}; drop "
            f"{f[f'sealing_{name}_drop']:.2f}",
            target(f"sealing_{name}_drop"),
        ))  # fmt: skip
    return rows
