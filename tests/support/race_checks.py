"""What a user checks after a race for the same slots (tests/test_races.py, and the same
races through a transaction pooler in tests/adapters/postgres/test_pooler.py): every
answer counted, one winner per slot, losers told the winner, histories that show it."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, cast

from domain import LessonLedger
from tests.support.racing import TIME_SLOTS, Call, lesson_id, shared_details
from tests.support.stores import Store

REQUESTS = ("OpenedByRequest", "LessonRequested")  # a new slot's first request, or a later one


def show(calls: list[Call], limit: int = 10) -> str:
    """One line per call (worker, slot, request id, outcome, holder named), then the
    first call's error in full (a traceback, for an unexpected exception)."""
    lines = [
        f"{c['worker']} {c['slot']} {c.get('request_id')}: {c['outcome']} "
        f"{c.get('error_type') or ''} holder={c.get('holder_request_id')}"
        for c in calls[:limit]
    ]
    if len(calls) > limit:
        lines.append(f"... and {len(calls) - limit} more")
    first_error = next((c["error"] for c in calls if c.get("error")), None)
    if first_error:
        lines.append("the first one's error:")
        lines.extend("    " + line for line in first_error.splitlines())
    return "\n  ".join(lines)


def assert_no_errors(calls: list[Call], allowed: set[str]) -> None:
    unexpected = [call for call in calls if call["outcome"] not in allowed]
    assert not unexpected, (
        f"{len(unexpected)} of {len(calls)} calls got an answer other than "
        f"{sorted(allowed)}:\n  {show(unexpected)}"
    )
    wrong_errors = [
        call
        for call in calls
        if call["outcome"] == "conflict" and call.get("error_type") != "LessonConflict"
    ]
    assert not wrong_errors, f"conflicts that are not a LessonConflict:\n  {show(wrong_errors)}"


def assert_every_racer_asked_every_slot(calls: list[Call], racers: int) -> None:
    per_slot = Counter(call["slot"] for call in calls)
    assert per_slot == dict.fromkeys(TIME_SLOTS, racers), (
        f"expected {racers} answers for each of the {len(TIME_SLOTS)} slots, got {dict(per_slot)}"
    )


def one_winner_per_slot(calls: list[Call]) -> dict[str, Call]:
    """The accepted call of each slot; fails unless there is exactly one per slot."""
    accepted: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        if call["outcome"] == "accepted":
            accepted[call["slot"]].append(call)
    wrong = {slot: len(accepted[slot]) for slot in TIME_SLOTS if len(accepted[slot]) != 1}
    assert not wrong, f"slots without exactly one accepted request (slot: accepted count): {wrong}"
    winners = {slot: accepted[slot][0] for slot in TIME_SLOTS}
    for slot, winner in winners.items():
        assert winner["lesson_id"] == str(lesson_id(slot)), f"{slot}: the winner's lesson id"
        assert winner["attempt"] == 1, f"{slot}: the winner starts attempt 1, got {winner}"
        assert winner["position"] is not None, f"{slot}: an accepted request has a position"
    positions = [winner["position"] for winner in winners.values()]
    assert len(set(positions)) == len(positions), f"two winners share a position: {positions}"
    return winners


def assert_losers_told_the_winner(calls: list[Call], winners: dict[str, Call]) -> None:
    misnamed = []
    for call in calls:
        if call["outcome"] != "conflict":
            continue
        winner = winners[call["slot"]]
        told = (
            call["holder_request_id"],
            call["holder_actor"],
            call["holder_status"],
            call["holder_attempt"],
        )
        if told != (winner["request_id"], winner["actor"], "requested", 1):
            misnamed.append(call)
    assert not misnamed, (
        "conflicts that do not name the winner of the slot:\n  "
        + show(misnamed)
        + f"\n  winners: { {s: w['request_id'] for s, w in winners.items()} }"
    )


def assert_history_shows_the_race(
    ledger: LessonLedger, winners: dict[str, Call], calls: list[Call]
) -> int:
    """Each slot's history: opened and requested by the winner (one OpenedByRequest),
    then one rejection per loser naming the winner; its state is the winner's attempt 1.
    Returns the number of events all slots hold."""
    events = 0
    for slot, winner in winners.items():
        losers = [c for c in calls if c["slot"] == slot and c["outcome"] == "conflict"]
        history = ledger.history(lesson_id(slot))
        entries = history.entries
        events += len(entries)
        names = [entry.event for entry in entries]
        assert names[:1] == ["OpenedByRequest"], f"{slot}: history starts {names}"
        requested = [(e.request_id, e.actor) for e in entries if e.event in REQUESTS]
        assert requested == [(winner["request_id"], winner["actor"])], (
            f"{slot}: expected one request, the winner's OpenedByRequest "
            f"{winner['request_id']!r}, got {requested}"
        )
        rejected = [e for e in entries if e.event == "RequestRejected"]
        assert sorted((e.request_id, e.actor) for e in rejected) == sorted(
            (c["request_id"], c["actor"]) for c in losers
        ), f"{slot}: expected one RequestRejected per loser, with the loser's request id and actor"
        assert len(entries) == 1 + len(losers), f"{slot}: unexpected events in history: {names}"
        for entry in rejected:
            assert entry.changes["reason"] == "conflict", f"{slot}: {entry}"
            assert entry.changes["holder_request_id"] == winner["request_id"], (
                f"{slot}: the recorded rejection of {entry.request_id!r} names "
                f"{entry.changes['holder_request_id']!r}, not the winner {winner['request_id']!r}"
            )
        state = ledger.get_lesson(lesson_id(slot))
        assert state is not None, f"{slot}: get_lesson found nothing"
        assert (state.status, state.attempt, state.request_id, state.requested_by) == (
            "requested",
            1,
            winner["request_id"],
            winner["actor"],
        ), f"{slot}: the lesson should be requested, attempt 1, by the winner; it is {state}"
        assert history.state == state, f"{slot}: history's state differs from get_lesson"
    return events


def assert_one_accepted_rest_conflicts(
    store: Store, ledger: LessonLedger, calls: list[Call], racers: int
) -> None:
    assert_no_errors(calls, {"accepted", "conflict"})
    assert_every_racer_asked_every_slot(calls, racers)
    winners = one_winner_per_slot(calls)
    assert_losers_told_the_winner(calls, winners)
    events = assert_history_shows_the_race(ledger, winners, calls)
    assert store.count_events() == events, "the database holds events the histories do not show"
    assert events == len(TIME_SLOTS) + (racers - 1) * len(TIME_SLOTS)


def assert_one_accepted_rest_replayed(
    store: Store, ledger: LessonLedger, calls: list[Call], racers: int
) -> None:
    assert_no_errors(calls, {"accepted", "replayed"})
    assert_every_racer_asked_every_slot(calls, racers)
    winners = one_winner_per_slot(calls)
    assert {w["request_id"] for w in winners.values()} == {
        f"shared-{slot.replace(':', '')}" for slot in TIME_SLOTS
    }
    for call in calls:
        if call["outcome"] == "replayed":
            assert (call["lesson_id"], call["attempt"], call["position"]) == (
                str(lesson_id(call["slot"])),
                1,
                None,
            ), f"a replay answers the lesson's attempt 1 and writes nothing: {call}"
    for slot in TIME_SLOTS:
        history = ledger.history(lesson_id(slot))
        names = [(e.event, e.request_id) for e in history.entries]
        shared = f"shared-{slot.replace(':', '')}"
        assert names == [("OpenedByRequest", shared)], (
            f"{slot}: a shared request id must give one OpenedByRequest and nothing else, "
            f"got {names}"
        )
        state = ledger.get_lesson(lesson_id(slot))
        assert state is not None
        assert (state.status, state.attempt, state.request_id) == ("requested", 1, shared)
        students = [cast(dict[str, Any], student)["id"] for student in state.students or []]
        assert students == [s["id"] for s in shared_details(slot)["students"]], (
            f"{slot}: the lesson keeps the request's students"
        )
    assert store.count_events() == len(TIME_SLOTS)


def assert_processes_raced_at_the_same_time(calls: list[Call], processes: int) -> None:
    spans: dict[str, tuple[float, float]] = {}
    for call in calls:
        process = call["worker"][:2]
        started, finished = spans.get(process, (call["started"], call["finished"]))
        spans[process] = (min(started, call["started"]), max(finished, call["finished"]))
    assert sorted(spans) == [f"p{i}" for i in range(processes)], f"processes: {sorted(spans)}"
    alone = [
        process
        for process, (started, finished) in spans.items()
        if not any(s < finished and started < f for p, (s, f) in spans.items() if p != process)
    ]
    assert not alone, f"processes that raced with no other process running: {alone} {spans}"
