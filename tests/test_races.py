"""Real races for the same lesson slots, on SQLite and on PostgreSQL.

Many threads, and several separate processes, request the same 20 slots at the same
moment (barriers start them together). Whatever the interleaving, a user must see:

* with a request id of their own: exactly one request per slot is accepted, every
  other one is a conflict that names the winner, and the slot's history shows the
  winner's OpenedByRequest (the new slot's first request) and one RequestRejected per
  loser;
* with one shared request id (a retried request): exactly one accepted, the rest
  replayed, and only the one OpenedByRequest per slot;
* nothing else: no database error, no "too much contention", no invalid answer.

Every call's answer is collected (see tests/racing.py) and counted; a failure lists
the calls that broke the rule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain import LessonConflict, LessonLedger
from tests.support.race_checks import (
    REQUESTS,
    assert_no_errors,
    assert_one_accepted_rest_conflicts,
    assert_one_accepted_rest_replayed,
    assert_processes_raced_at_the_same_time,
    show,
)
from tests.support.racing import (
    TIME_SLOTS,
    Plan,
    lesson_id,
    open_in_processes,
    race_in_processes,
    race_in_threads,
    slot_fields,
)
from tests.support.stores import Store

pytestmark = pytest.mark.timeout(120)

THREADS = 8
PROCESSES = 3
THREADS_PER_PROCESS = 2
RACE_TIMEOUT = 60.0  # seconds; a race that takes longer is stuck, not slow


# 1. Threads, each with a request id of its own. The `ledger` fixture has created the
# tables already: opening at once on a fresh database has its own test (below).


@pytest.mark.parametrize("sharing", ["own ledger per thread", "one shared ledger"])
def test_threads_racing_for_the_same_slots_get_one_winner_each_and_conflicts_naming_it(
    store: Store, ledger: LessonLedger, sharing: str
) -> None:
    workers = [f"t{i}" for i in range(THREADS)]
    ledger_for = (lambda _: ledger) if sharing == "one shared ledger" else (lambda _: store.open())

    calls = race_in_threads(workers, Plan(), ledger_for, RACE_TIMEOUT)

    assert_one_accepted_rest_conflicts(store, ledger, calls, racers=THREADS)


# 2. Separate processes, each with its own ledger, and two threads sharing it.


def test_processes_racing_for_the_same_slots_get_one_winner_each_and_conflicts_naming_it(
    store: Store, ledger: LessonLedger
) -> None:
    calls = race_in_processes(store.url, PROCESSES, THREADS_PER_PROCESS, Plan(), RACE_TIMEOUT)

    assert_no_errors(calls, {"accepted", "conflict"})
    assert_processes_raced_at_the_same_time(calls, PROCESSES)
    assert_one_accepted_rest_conflicts(store, ledger, calls, racers=PROCESSES * THREADS_PER_PROCESS)


OPEN_ROUNDS = {"sqlite": 100, "postgresql": 20}  # fresh databases, each opened by every
# thread of every process at once (an SQLite open is cheap: more rounds, to catch a rare failure)


@pytest.fixture
def fresh_urls(store: Store, tmp_path: Path) -> Iterator[list[str]]:
    """URLs of databases nobody has opened yet, next to the store's own: SQLite files
    in the test's folder, or PostgreSQL schemas (dropped afterwards)."""
    rounds = OPEN_ROUNDS[store.kind]
    if store.kind == "sqlite":
        yield [f"sqlite:///{tmp_path / f'fresh-{i}.db'}" for i in range(rounds)]
        return
    schema = store.database.schema
    schemas = [f"{schema}_fresh{i}" for i in range(rounds)]
    base = store.url.split("?", 1)[0]
    try:
        yield [f"{base}?schema={name}" for name in schemas]
    finally:
        with store.database.connect() as conn:
            for name in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_processes_opening_the_ledger_at_once_on_a_fresh_database_all_succeed(
    store: Store, fresh_urls: list[str]
) -> None:
    # open_ledger creates the tables (and, on PostgreSQL, the schema) on first use;
    # several services starting together on a new database must all open it.
    opens = open_in_processes(fresh_urls, PROCESSES, THREADS_PER_PROCESS, RACE_TIMEOUT)

    failed = [o for o in opens if o["outcome"] != "opened"]
    rounds = sorted({o.get("round") for o in failed}, key=str)
    assert not failed, (
        f"{len(failed)} of {len(opens)} opens failed, on {len(rounds)} of {len(fresh_urls)} fresh "
        f"databases opened by {PROCESSES} processes x {THREADS_PER_PROCESS} threads at once:\n  "
        + show([{**o, "slot": f"round {o.get('round')}"} for o in failed])
    )
    assert len(opens) == len(fresh_urls) * PROCESSES * THREADS_PER_PROCESS


# 3. One shared request id: a request retried by everyone at once.


def test_threads_retrying_one_request_get_one_accepted_and_the_rest_replayed(
    store: Store, ledger: LessonLedger
) -> None:
    workers = [f"t{i}" for i in range(THREADS)]

    calls = race_in_threads(
        workers, Plan(shared_request_id=True), lambda _: store.open(), RACE_TIMEOUT
    )

    assert_one_accepted_rest_replayed(store, ledger, calls, racers=THREADS)


def test_processes_retrying_one_request_get_one_accepted_and_the_rest_replayed(
    store: Store, ledger: LessonLedger
) -> None:
    plan = Plan(shared_request_id=True)

    calls = race_in_processes(store.url, PROCESSES, THREADS_PER_PROCESS, plan, RACE_TIMEOUT)

    assert_no_errors(calls, {"accepted", "replayed"})
    assert_processes_raced_at_the_same_time(calls, PROCESSES)
    assert_one_accepted_rest_replayed(store, ledger, calls, racers=PROCESSES * THREADS_PER_PROCESS)


# 4. Overlapping partial batches, the same slots in different orders.


def test_threads_sending_overlapping_batches_get_one_winner_per_slot_across_batches(
    store: Store, ledger: LessonLedger
) -> None:
    workers = [f"t{i}" for i in range(THREADS)]
    plan = Plan(command="batch")
    assert len({tuple(plan.order(w)) for w in workers}) == THREADS, "orders must differ"

    calls = race_in_threads(workers, plan, lambda _: store.open(), RACE_TIMEOUT)

    assert_one_accepted_rest_conflicts(store, ledger, calls, racers=THREADS)


def test_processes_sending_overlapping_batches_get_one_winner_per_slot_across_batches(
    store: Store, ledger: LessonLedger
) -> None:
    plan = Plan(command="batch")

    calls = race_in_processes(store.url, PROCESSES, THREADS_PER_PROCESS, plan, RACE_TIMEOUT)

    assert_no_errors(calls, {"accepted", "conflict"})
    assert_processes_raced_at_the_same_time(calls, PROCESSES)
    assert_one_accepted_rest_conflicts(store, ledger, calls, racers=PROCESSES * THREADS_PER_PROCESS)


# 5. A cancellation racing with requests for the slot it frees.

CANCEL_ROUNDS = 10  # one slot per round
EARLY_REQUESTERS = 3  # request at the moment the cancellation starts
LATE_REQUESTERS = 3  # request once the cancellation has returned


def test_cancel_racing_with_new_requests_frees_the_slot_for_exactly_one_of_them(
    store: Store, ledger: LessonLedger
) -> None:
    slots = TIME_SLOTS[:CANCEL_ROUNDS]
    for slot in slots:
        ledger.request_lesson(
            **slot_fields(slot), request_id=f"first-{slot.replace(':', '')}", actor="teacher-first"
        )
    requesters = [f"early{i}" for i in range(EARLY_REQUESTERS)]
    requesters += [f"late{i}" for i in range(LATE_REQUESTERS)]
    racers = 1 + len(requesters)
    barrier = threading.Barrier(racers)
    cancelled = {slot: threading.Event() for slot in slots}
    answers: dict[tuple[str, str], dict[str, Any]] = {}

    def call(own: LessonLedger, who: str, slot: str) -> None:
        tag = slot.replace(":", "")
        answer: dict[str, Any] = {"request_id": f"{who}-{tag}", "actor": f"teacher-{who}"}
        try:
            if who == "canceller":
                result = own.cancel(
                    lesson_id=lesson_id(slot),
                    request_id=f"cancel-{tag}",
                    actor="teacher-first",
                    reason="moved",
                )
            else:
                if who.startswith("late") and not cancelled[slot].wait(RACE_TIMEOUT):
                    raise TimeoutError("the cancellation never returned")
                result = own.request_lesson(
                    **slot_fields(slot), request_id=f"{who}-{tag}", actor=f"teacher-{who}"
                )
        except LessonConflict as conflict:
            holder = conflict.holder
            answer.update(
                outcome="conflict", holder=(holder.request_id, holder.attempt) if holder else None
            )
        except Exception as error:
            answer.update(outcome="error", error=repr(error))
        else:
            answer.update(outcome=result.outcome, attempt=result.attempt)
        finally:
            if who == "canceller":
                cancelled[slot].set()
        answers[who, slot] = answer

    def racer(who: str) -> None:
        try:
            own = store.open()
            for slot in slots:  # one round per slot, all racers starting it together
                barrier.wait(RACE_TIMEOUT)
                call(own, who, slot)
        except BaseException as error:
            barrier.abort()  # the others stop waiting for this one
            answers[who, "failed"] = {"outcome": "error", "error": repr(error)}

    threads = [
        threading.Thread(target=racer, args=(who,), daemon=True)
        for who in ["canceller", *requesters]
    ]
    deadline = time.monotonic() + RACE_TIMEOUT
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "racers still running"

    errors = {key: a for key, a in answers.items() if a["outcome"] not in ("accepted", "conflict")}
    assert not errors, f"answers other than accepted or conflict: {errors}"
    assert len(answers) == racers * len(slots), "every racer answered in every round"
    for slot in slots:
        tag = slot.replace(":", "")
        first = f"first-{tag}"
        cancel = answers["canceller", slot]
        assert (cancel["outcome"], cancel["attempt"]) == ("accepted", 1), (
            f"{slot}: the cancellation of a requested lesson is accepted: {cancel}"
        )
        asked = {who: answers[who, slot] for who in requesters}
        winners = [a for a in asked.values() if a["outcome"] == "accepted"]
        # Late requesters come after the cancellation, so someone gets the slot; once
        # someone has it, it is held again: exactly one re-request is accepted.
        assert len(winners) == 1, f"{slot}: expected one accepted re-request, got {asked}"
        winner = winners[0]
        assert winner["attempt"] == 2, f"{slot}: the re-request starts attempt 2: {winner}"
        for who, answer in asked.items():
            if answer["outcome"] != "conflict":
                continue
            allowed = {(winner["request_id"], 2)}
            if who.startswith("early"):
                allowed.add((first, 1))  # it may come before the cancellation
            assert answer["holder"] in allowed, (
                f"{slot}: {who} was told the slot is held by {answer['holder']}, "
                f"expected one of {allowed}"
            )

        history = ledger.history(lesson_id(slot))
        entries = history.entries
        requested = [(e.event, e.request_id) for e in entries if e.event in REQUESTS]
        assert requested == [
            ("OpenedByRequest", first),
            ("LessonRequested", winner["request_id"]),
        ], f"{slot}: requests must be the first + the accepted re-requests: {requested}"
        names = [e.event for e in entries]
        assert names.count("LessonCancelled") == 1, f"{slot}: {names}"
        assert names.index("LessonCancelled") < max(
            i for i, e in enumerate(entries) if e.event == "LessonRequested"
        ), f"{slot}: the re-request must come after the cancellation: {names}"
        rejected = {
            e.request_id: (e.changes["holder_request_id"], e.changes["attempt"])
            for e in entries
            if e.event == "RequestRejected"
        }
        told = {a["request_id"]: a["holder"] for a in asked.values() if a["outcome"] == "conflict"}
        assert rejected == told, (
            f"{slot}: each recorded rejection names the holder its caller was told "
            f"(request id: (holder, attempt)): recorded {rejected}, told {told}"
        )
        assert len(entries) == 3 + len(told), f"{slot}: unexpected events: {names}"

        state = ledger.get_lesson(lesson_id(slot))
        assert state is not None
        assert history.state == state, f"{slot}: the final state is the state after the last event"
        assert (state.status, state.attempt, state.request_id, state.cancel_reason) == (
            "requested",
            2,
            winner["request_id"],
            None,
        ), f"{slot}: after the race the lesson is requested again, by the winner: {state}"
        assert state.version == entries[-1].version
    assert store.count_events() == sum(
        len(ledger.history(lesson_id(slot)).entries) for slot in slots
    )
