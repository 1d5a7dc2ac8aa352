"""The incident report as a query: after a scripted race between two batches that spell
the same slots differently, the report reproduces every count."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from adapters.eventstore import event_log
from adapters.storage.refused_requests import SqlInvalidRequestLog
from domain import IdempotencyMismatch, InvalidLessonRequest, LessonConflict, StaleGeneration
from projections.conflict_report import conflict_report
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
HOURS = range(8, 18)


def week_items(batch: str, padded: bool) -> list[dict[str, Any]]:
    """The same ten slots; one batch writes `8:30-9:00`, the other `08:30 - 09:00`."""

    def spell(hour: int, minute: int) -> str:
        return f"{hour:02d}:{minute:02d}" if padded else f"{hour}:{minute:02d}"

    separator = " - " if padded else "-"
    return [
        {
            "provider_id": PROVIDER,
            "school_id": "school-1",
            "lesson_date": "2025-09-05",
            "time_slot": f"{spell(hour, 30)}{separator}{spell(hour + 1, 0)}",
            "request_id": f"{batch}-{hour}",
            "actor": f"calendar-{batch}",
        }
        for hour in HOURS
    ]


def test_the_report_reproduces_a_scripted_race(store: Store) -> None:
    ledger = store.open()
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def send(batch: str, padded: bool) -> None:
        racer = store.open()
        start.wait(timeout=30)
        results[batch] = racer.request_batch(week_items(batch, padded), batch_id=batch)

    racers = [threading.Thread(target=send, args=args) for args in (("A", False), ("B", True))]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)

    # And the other kinds of refusal the incident report suspected.
    for request_id in ("s1", "s2", "s3"):
        with pytest.raises(InvalidLessonRequest):
            ledger.request_lesson(
                provider_id=PROVIDER,
                school_id="school-1",
                lesson_date="2025-09-05",
                time_slot="structured",
                request_id=request_id,
                actor="calendar",
            )
    for request_id in ("n1", "n2"):
        with pytest.raises(InvalidLessonRequest):
            ledger.request_lesson(
                provider_id=PROVIDER,
                school_id=None,
                lesson_date="2025-09-05",
                time_slot="14:00-14:30",
                request_id=request_id,
                actor="calendar",
            )
    with pytest.raises(InvalidLessonRequest):
        ledger.request_lesson(
            provider_id=PROVIDER,
            school_id="school-1",
            lesson_date="2025-02-30",
            time_slot="14:00-14:30",
            request_id="d1",
            actor="calendar",
        )
    held = ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-2",
        lesson_date="2025-09-05",
        time_slot="08:00-08:30",
        request_id="x1",
        actor="alice",
    )
    with pytest.raises(IdempotencyMismatch):
        ledger.request_lesson(
            provider_id=PROVIDER,
            school_id="school-2",
            lesson_date="2025-09-05",
            time_slot="08:00-08:30",
            request_id="x1",
            actor="mallory",
        )
    ledger.record_failure(lesson_id=held.lesson_id, attempt=1, reason="timeout")
    ledger.regenerate(lesson_id=held.lesson_id, request_id="x2", actor="alice")
    with pytest.raises(StaleGeneration):
        ledger.record_generation(lesson_id=held.lesson_id, attempt=1, content={"a": 1}, model="m")
    ledger.cancel(lesson_id=held.lesson_id, request_id="x3", actor="alice")
    with pytest.raises(LessonConflict):
        ledger.cancel(lesson_id=held.lesson_id, request_id="x4", actor="bob")

    refused = SqlInvalidRequestLog(store.database)
    try:
        report = conflict_report(event_log(ledger), refused.read())
    finally:
        refused.close()

    accepted = {b: r.summary["accepted"] for b, r in results.items()}
    assert accepted["A"] + accepted["B"] == len(HOURS)
    assert report.causes == {
        "slot_already_held": len(HOURS),
        "wrong_state": 1,
        "stale_generation": 1,
        "idempotency_mismatch": 1,
        "missing_time_slot": 3,
        "missing_school": 2,
        "invalid_input": 1,
    }
    # Each batch lost exactly the slots the other won, to the other batch.
    pairs = {(c.batch, c.holder_batch): c.count for c in report.collisions}
    assert pairs == {
        pair: count
        for pair, count in {("A", "B"): accepted["B"], ("B", "A"): accepted["A"]}.items()
        if count
    }
    assert all(c.min_gap_seconds >= 0 for c in report.collisions)
    # Every slot of the race was asked for under two spellings of one key.
    assert len(report.spellings) == len(HOURS)
    assert all(
        {s["time_slot"] for s in clash.spellings}
        == {f"{h}:30-{h + 1}:00", f"{h:02d}:30 - {h + 1:02d}:00"}
        for clash in report.spellings
        for h in [int(clash.time_slot[:2])]
    )
    assert len(report.contested) == len(HOURS)
    assert all(slot.rejections == 1 for slot in report.contested)
    assert all(slot.requesters == {"calendar-A", "calendar-B"} for slot in report.contested)
    assert report.as_json()["causes"]["missing_school"] == 2
    only_school_2 = conflict_report(event_log(ledger), [], school_id="school-2")
    assert only_school_2.causes["slot_already_held"] == 0
    assert only_school_2.causes["idempotency_mismatch"] == 1


def test_a_batch_that_sends_one_lesson_twice_is_in_the_report(store: Store) -> None:
    """The incident's "identical time_slot values across multiple lessons": one batch
    holding the same slot twice, spelled two ways."""
    ledger = store.open()
    twice = [*week_items("W", padded=False)[:2], week_items("W2", padded=True)[0]]
    twice[2]["request_id"] = "W-again"

    result = ledger.request_batch(twice, batch_id="W")

    assert [item.outcome for item in result.items] == [
        "accepted",
        "accepted",
        "duplicate_in_batch",
    ]
    report = conflict_report(event_log(ledger), [])
    assert report.causes["slot_already_held"] == 1
    assert [(c.batch, c.holder_batch, c.count) for c in report.collisions] == [("W", "W", 1)]
    assert [c.lesson_id for c in report.contested] == [result.items[0].lesson_id]
    assert [[s["time_slot"] for s in c.spellings] for c in report.spellings] == [
        ["8:30-9:00", "08:30 - 09:00"]
    ]
