"""Racers for tests/test_races.py: the code that threads and spawned processes run.

A process started with the "spawn" context imports this module afresh, so everything
a racer needs lives here: the slots, the plan of what to send, and a worker that
turns every call's answer into plain data (a dict per call), so the test can count
every outcome across threads and processes alike.

Racers are synchronised with barriers only: each phase (open the ledger, race)
starts when every racer has reached it, and every wait has a timeout.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from adapters.eventstore import open_ledger
from domain import LessonConflict, LessonLedger, lesson_id_for

PROVIDER_ID = "5b0c6f1e-8a51-4d0e-9a43-2f7f1f4c9b10"
SCHOOL_ID = "school-race"
LESSON_DATE = "2025-03-03"
# 20 half-hour slots of one provider, school and day: 08:00-08:30 ... 17:30-18:00.
TIME_SLOTS = tuple(
    f"{start // 60:02d}:{start % 60:02d}-{(start + 30) // 60:02d}:{(start + 30) % 60:02d}"
    for start in range(8 * 60, 18 * 60, 30)
)

Call = dict[str, Any]
"""One call's answer: worker, slot, request_id, actor, outcome (accepted, replayed,
conflict or error), and the holder a conflict named or the error's traceback."""


def slot_fields(time_slot: str) -> dict[str, str]:
    return {
        "provider_id": PROVIDER_ID,
        "school_id": SCHOOL_ID,
        "lesson_date": LESSON_DATE,
        "time_slot": time_slot,
    }


def lesson_id(time_slot: str) -> UUID:
    return lesson_id_for(PROVIDER_ID, SCHOOL_ID, LESSON_DATE, time_slot)


def _tag(time_slot: str) -> str:
    return time_slot.replace(":", "")


def shared_details(time_slot: str) -> dict[str, Any]:
    """The same details for a slot in every racer: a shared request id replays only
    when the command is the same."""
    return {
        "subject": f"reading {time_slot}",
        "topic": "main idea",
        "students": [{"id": "s-1", "grade": 3}, {"id": "s-2", "grade": 4}],
    }


@dataclass(frozen=True)
class Plan:
    """What each racer sends.

    command: "request" (one request_lesson per slot, all racers in the same order,
    so they collide on every slot) or "batch" (one partial request_batch of all the
    slots, in an order of the racer's own).
    shared_request_id: every racer sends the same request id, actor and details per
    slot (a retry of one request), instead of a request id and actor of its own.
    """

    command: str = "request"
    shared_request_id: bool = False
    slots: tuple[str, ...] = TIME_SLOTS

    def identity(self, worker: str, time_slot: str) -> tuple[str, str]:
        """(request_id, actor) of this racer's request for the slot."""
        if self.shared_request_id:
            return f"shared-{_tag(time_slot)}", "teacher-shared"
        return f"req-{worker}-{_tag(time_slot)}", f"teacher-{worker}"

    def details(self, time_slot: str) -> dict[str, Any] | None:
        return shared_details(time_slot) if self.shared_request_id else None

    def order(self, worker: str) -> list[str]:
        if self.command != "batch":
            return list(self.slots)
        slots = list(self.slots)
        random.Random(f"order-{worker}").shuffle(slots)
        return slots


def _error_text(error: BaseException) -> str:
    """The traceback, with the one a `raise ... from None` hid: that names the cause."""
    text = "".join(traceback.format_exception(error)).strip()
    hidden = error.__context__ if error.__suppress_context__ else None
    if hidden is not None:
        text += "\n\nraised while handling (hidden by 'from None'):\n"
        text += "".join(traceback.format_exception(hidden)).strip()
    return text


def _holder_fields(conflict: LessonConflict) -> dict[str, Any]:
    holder = conflict.holder
    if holder is None:
        return {
            "holder_request_id": None,
            "holder_actor": None,
            "holder_status": None,
            "holder_attempt": None,
        }
    return {
        "holder_request_id": holder.request_id,
        "holder_actor": holder.actor,
        "holder_status": holder.status,
        "holder_attempt": holder.attempt,
    }


def request_once(ledger: LessonLedger, worker: str, time_slot: str, plan: Plan) -> Call:
    """One request_lesson, its answer as a Call; no exception escapes."""
    request_id, actor = plan.identity(worker, time_slot)
    call: Call = {"worker": worker, "slot": time_slot, "request_id": request_id, "actor": actor}
    try:
        result = ledger.request_lesson(
            **slot_fields(time_slot),
            request_id=request_id,
            actor=actor,
            details=plan.details(time_slot),
        )
    except LessonConflict as conflict:
        call.update(
            outcome="conflict",
            error_type="LessonConflict",
            error=str(conflict),
            **_holder_fields(conflict),
        )
    except Exception as error:
        call.update(outcome="error", error_type=type(error).__name__, error=_error_text(error))
    else:
        call.update(
            outcome=result.outcome,
            lesson_id=str(result.lesson_id),
            attempt=result.attempt,
            position=result.position,
        )
    return call


def request_as_batch(ledger: LessonLedger, worker: str, plan: Plan) -> list[Call]:
    """One partial request_batch of the plan's slots in this racer's order."""
    slots = plan.order(worker)
    identities = [plan.identity(worker, slot) for slot in slots]
    items = [
        {**slot_fields(slot), "request_id": rid, "actor": actor, "details": plan.details(slot)}
        for slot, (rid, actor) in zip(slots, identities, strict=True)
    ]
    calls: list[Call] = [
        {"worker": worker, "slot": slot, "request_id": rid, "actor": actor}
        for slot, (rid, actor) in zip(slots, identities, strict=True)
    ]
    try:
        result = ledger.request_batch(items, mode="partial", batch_id=f"batch-{worker}")
    except Exception as error:
        for call in calls:
            call.update(outcome="error", error_type=type(error).__name__, error=_error_text(error))
        return calls
    for call, item in zip(calls, result.items, strict=True):
        call.update(
            outcome=item.outcome,
            lesson_id=str(item.lesson_id),
            attempt=item.attempt,
            position=item.position,
        )
        if item.error is not None:
            call.update(error_type=type(item.error).__name__, error=str(item.error))
            if isinstance(item.error, LessonConflict):
                call.update(_holder_fields(item.error))
    return calls


def run_plan(ledger: LessonLedger, worker: str, plan: Plan) -> list[Call]:
    """Every call of this racer; each notes when the racer started and finished
    (wall clock, comparable across processes) so a test can see the racers overlap."""
    started = time.time()
    if plan.command == "batch":
        calls = request_as_batch(ledger, worker, plan)
    else:
        calls = [request_once(ledger, worker, slot, plan) for slot in plan.order(worker)]
    finished = time.time()
    for call in calls:
        call.update(started=started, finished=finished)
    return calls


def _failure(worker: str, phase: str, error: BaseException) -> Call:
    return {
        "worker": worker,
        "slot": None,
        "phase": phase,
        "outcome": "error",
        "error_type": type(error).__name__,
        "error": _error_text(error),
    }


def race_in_threads(
    workers: list[str],
    plan: Plan,
    ledger_for: Callable[[str], LessonLedger],
    timeout: float,
) -> list[Call]:
    """Run one racer per worker name in its own thread and return every call.

    Each thread gets its ledger from `ledger_for` (a new one, or one they share)
    when all threads have started, then they all start racing together.
    """
    barrier = threading.Barrier(len(workers))
    reports: dict[str, list[Call]] = {}

    def racer(worker: str) -> None:
        phase = "start"
        try:
            barrier.wait(timeout)
            phase = "open"
            ledger = ledger_for(worker)
            phase = "start the race"
            barrier.wait(timeout)
            phase = "race"
            reports[worker] = run_plan(ledger, worker, plan)
        except BaseException as error:
            barrier.abort()  # the others stop waiting for this one
            reports[worker] = [_failure(worker, phase, error)]

    threads = [
        threading.Thread(target=racer, args=(worker,), name=f"racer-{worker}", daemon=True)
        for worker in workers
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        raise TimeoutError(f"racer threads still running after {timeout} s: {stuck}")
    return [call for worker in workers for call in reports[worker]]


def process_main(
    url: str,
    process_name: str,
    threads: int,
    plan: Plan,
    barrier: Any,
    results: Any,
    timeout: float,
) -> None:
    """A racing process: wait for the others, open its own ledger on `url` (all at
    once), wait again, then race with `threads` threads sharing that ledger. Puts its
    report (a dict with every call) on `results`."""
    report: dict[str, Any] = {"process": process_name, "calls": []}
    phase = "start"
    ledger: LessonLedger | None = None
    try:
        barrier.wait(timeout)
        phase = "open"
        ledger = open_ledger(url)
        phase = "start the race"
        barrier.wait(timeout)
        phase = "race"
        workers = [f"{process_name}t{i}" for i in range(threads)]
        report["calls"] = race_in_threads(workers, plan, lambda _: ledger, timeout)
    except BaseException as error:
        barrier.abort()
        report["calls"].append(_failure(process_name, phase, error))
    finally:
        if ledger is not None:
            ledger.close()
        results.put(report)


def open_at_once_main(
    urls: list[str],
    process_name: str,
    threads: int,
    barrier: Any,
    results: Any,
    timeout: float,
) -> None:
    """An opening process: for each URL in turn, its `threads` threads and every other
    process's threads (one barrier for all of them) open the ledger at the same
    moment, then close it. Puts its report (a dict with every open) on `results`."""
    opens: list[Call] = []

    def opener(worker: str) -> None:
        for round_, url in enumerate(urls):
            try:
                barrier.wait(timeout)
            except BaseException as error:
                opens.append({**_failure(worker, "start", error), "round": round_})
                return
            try:
                open_ledger(url).close()
            except Exception as error:
                opens.append(
                    {
                        "worker": worker,
                        "round": round_,
                        "url": url,
                        "outcome": "error",
                        "error_type": type(error).__name__,
                        "error": _error_text(error),
                    }
                )
            else:
                opens.append({"worker": worker, "round": round_, "url": url, "outcome": "opened"})

    workers = [
        threading.Thread(target=opener, args=(f"{process_name}t{i}",), daemon=True)
        for i in range(threads)
    ]
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        barrier.abort()
        opens.append(
            {
                "worker": process_name,
                "outcome": "error",
                "error_type": "TimeoutError",
                "error": f"openers still running after {timeout} s",
            }
        )
    results.put({"process": process_name, "calls": opens})


def _run_processes(
    target: Callable[..., None],
    args: Callable[[str, Any, Any], tuple[Any, ...]],
    processes: int,
    parties: int,
    timeout: float,
) -> list[Call]:
    """Spawn `processes` processes running `target(*args(name, barrier, results))`,
    collect their reports' calls, and add a failure entry for any process that did not
    report or did not exit 0. `parties` threads in all wait on the shared barrier."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(parties)
    results = context.Queue()
    names = [f"p{i}" for i in range(processes)]
    children = [
        context.Process(
            target=target, name=f"racer-{name}", daemon=True, args=args(name, barrier, results)
        )
        for name in names
    ]
    deadline = time.monotonic() + timeout + 30  # a spawned interpreter takes a while to start
    for child in children:
        child.start()
    reports: list[dict[str, Any]] = []
    try:
        while len(reports) < processes and time.monotonic() < deadline:
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:
                if not any(child.is_alive() for child in children) and results.empty():
                    break  # a process died without reporting
    finally:
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.terminate()
                child.join(5)
    calls = [call for report in reports for call in report["calls"]]
    reported = {report["process"] for report in reports}
    for name, child in zip(names, children, strict=True):
        if name not in reported or child.exitcode != 0:
            calls.append(
                {
                    "worker": name,
                    "slot": None,
                    "phase": "process",
                    "outcome": "error",
                    "error_type": "ProcessFailed",
                    "error": f"process {name}: reported={name in reported}, "
                    f"exit code {child.exitcode}",
                }
            )
    return calls


def race_in_processes(
    url: str, processes: int, threads_per_process: int, plan: Plan, timeout: float
) -> list[Call]:
    """Every call of `processes` spawned processes racing on the ledger at `url`, each
    with `threads_per_process` threads sharing the process's own ledger."""
    return _run_processes(
        process_main,
        lambda name, barrier, results: (
            url,
            name,
            threads_per_process,
            plan,
            barrier,
            results,
            timeout,
        ),
        processes,
        processes,
        timeout,
    )


def open_in_processes(
    urls: list[str], processes: int, threads_per_process: int, timeout: float
) -> list[Call]:
    """Every open of `processes` spawned processes with `threads_per_process` threads
    each, all opening the ledger at once on each URL in turn."""
    return _run_processes(
        open_at_once_main,
        lambda name, barrier, results: (urls, name, threads_per_process, barrier, results, timeout),
        processes,
        processes * threads_per_process,
        timeout,
    )
