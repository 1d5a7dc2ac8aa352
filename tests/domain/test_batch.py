"""Batches: each item decided on its own (partial) or all or nothing (atomic), written in
as few transactions as possible."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest

from domain import InvalidLessonRequest, LessonConflict, LessonLedger, LessonSlot, SlotStore
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def item(slot: str, request_id: str, actor: str = "calendar", **changes: Any) -> dict[str, Any]:
    return {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-08",
        "time_slot": slot,
        "request_id": request_id,
        "actor": actor,
        **changes,
    }


def week(count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` distinct half-hour slots over consecutive days, one request each."""
    items = []
    for i in range(count):
        day, (hour, half) = date(2025, 9, 8) + timedelta(days=i // 48), divmod(i % 48, 2)
        start = f"{hour:02d}:{half * 30:02d}"
        end = f"{hour:02d}:{half * 30 + 29:02d}"
        items.append(item(f"{start}-{end}", f"{prefix}-{i}", lesson_date=day.isoformat()))
    return items


def test_a_partial_batch_answers_every_item_in_input_order(ledger: LessonLedger) -> None:
    held = ledger.request_lesson(**item("10:00-10:30", "earlier", actor="alice"))
    replay = item("11:00-11:30", "r-replay")
    ledger.request_lesson(**replay)

    result = ledger.request_batch(
        [
            item("08:30-09:00", "r-0"),
            item("10:00-10:30", "r-1"),  # held by "earlier"
            replay,
            item("8:30 - 9:00", "r-3"),  # same slot as item 0, other spelling
            item("structured", "r-4"),
            {**item("09:00-09:30", "r-5"), "school_id": None},
        ],
        batch_id="batch-1",
    )

    assert [r.index for r in result.items] == [0, 1, 2, 3, 4, 5]
    assert [r.outcome for r in result.items] == [
        "accepted",
        "conflict",
        "replayed",
        "duplicate_in_batch",
        "invalid",
        "invalid",
    ]
    assert result.written
    conflict = result.items[1].error
    assert isinstance(conflict, LessonConflict) and conflict.holder is not None
    assert conflict.holder.request_id == "earlier"
    assert result.items[1].lesson_id == held.lesson_id
    assert result.items[3].lesson_id == result.items[0].lesson_id
    invalid = result.items[5].error
    assert isinstance(invalid, InvalidLessonRequest)
    assert [e["field"] for e in invalid.errors] == ["school_id"]
    assert result.summary == {
        "accepted": 1,
        "replayed": 1,
        "conflict": 1,
        "duplicate_in_batch": 1,
        "invalid": 2,
        "aborted": 0,
    }
    first_lesson = result.items[0].lesson_id
    assert first_lesson is not None
    accepted, duplicate = ledger.history(first_lesson).entries
    assert (accepted.correlation_id, accepted.request_id) == ("batch-1", "r-0")
    # The item sent twice is kept, with the spelling it came in, as every refusal is.
    assert (duplicate.event, duplicate.request_id, duplicate.correlation_id) == (
        "RequestRejected",
        "r-3",
        "batch-1",
    )
    assert duplicate.as_sent is not None and duplicate.as_sent["time_slot"] == "8:30 - 9:00"
    assert (
        duplicate.changes["message"]
        == "items[3] asks for the same lesson as items[0] of this batch"
    )
    rejected = ledger.history(held.lesson_id).entries[-1]
    assert (rejected.event, rejected.request_id, rejected.correlation_id) == (
        "RequestRejected",
        "r-1",
        "batch-1",
    )


def test_a_batch_sent_again_writes_nothing_whatever_its_items_were_answered(
    ledger: LessonLedger, store: Store
) -> None:
    """A retry is the same requests: accepted ones are replayed, and refusals, kept the
    first time, are answered again and not kept twice (the conflict report counts each
    refused request once)."""
    ledger.request_lesson(**item("10:00-10:30", "earlier", actor="alice"))
    items = [item("08:30-09:00", "r-0"), item("10:00-10:30", "r-1"), item("8:30-9:00", "r-2")]
    first = ledger.request_batch(items, batch_id="b")
    written = store.count_events()

    again = ledger.request_batch(items, batch_id="b")

    answered = ["conflict", "duplicate_in_batch"]
    assert [i.outcome for i in first.items] == ["accepted", *answered]
    assert [i.outcome for i in again.items] == ["replayed", *answered]
    conflict = again.items[1].error
    assert isinstance(conflict, LessonConflict) and conflict.holder is not None
    assert conflict.holder.request_id == "earlier"
    assert store.count_events() == written
    # A new request for the held slot is a new refusal, and kept.
    ledger.request_batch([item("10:00-10:30", "r-9")], batch_id="b2")
    assert store.count_events() == written + 1


def test_a_partial_batch_writes_its_accepted_items_in_one_transaction(
    postgres_store: Store,
) -> None:
    ledger = postgres_store.open()
    ledger.request_lesson(**item("07:00-07:30", "before"))
    before = postgres_store.count_transactions()

    result = ledger.request_batch(week(100, "b"))

    assert result.summary["accepted"] == 100
    assert postgres_store.count_transactions() == before + 1
    positions = [r.position for r in result.items]
    assert all(isinstance(p, int) for p in positions) and len(set(positions)) == 100


class RacedSlots:
    """A slot store whose batch saves are beaten by another writer: before each save, the
    competitor claims the next round of `contested` items. A real competing write on
    the same database, between deciding and saving."""

    def __init__(
        self, slots: SlotStore, competitor: LessonLedger, contested: list[list[dict[str, Any]]]
    ) -> None:
        self.slots = slots
        self.competitor = competitor
        self.contested = contested

    def load(self, lesson_id: UUID) -> LessonSlot | None:
        return self.slots.load(lesson_id)

    def events(self, lesson_id: UUID, up_to_version: int | None = None) -> Any:
        return self.slots.events(lesson_id, up_to_version)

    def save(self, *decided: Any) -> Any:
        # The ledger's one write path: a slot with pending events, or a new slot's event.
        writes = any(
            d is not None and (not isinstance(d, LessonSlot) or d.pending_events) for d in decided
        )
        if writes and self.contested:
            for competing in self.contested.pop(0):
                self.competitor.request_lesson(**competing)
        return self.slots.save(*decided)

    def close(self) -> None:
        self.slots.close()


def raced_ledger(store: Store, contested: list[list[dict[str, Any]]]) -> LessonLedger:
    opened = store.open()  # creates the tables
    return LessonLedger(RacedSlots(opened.slots, store.open(), contested), opened.student_data)


def theirs(items: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return {**items[index], "request_id": f"theirs-{index}", "actor": "other"}


@pytest.mark.parametrize(
    ("contested", "transactions"),
    [([[5, 40]], 1), ([[5], [40]], 1), ([[5], [40], [20]], 2)],
    ids=["beaten-once", "beaten-twice", "beaten-three-times"],
)
def test_a_partial_batch_beaten_to_some_slots_still_decides_each_item(
    postgres_store: Store, contested: list[list[int]], transactions: int
) -> None:
    items = week(64, "mine")
    taken = sorted(i for round_ in contested for i in round_)
    ledger = raced_ledger(
        postgres_store, [[theirs(items, i) for i in round_] for round_ in contested]
    )
    before = postgres_store.count_transactions()

    result = ledger.request_batch(items)

    outcomes = {r.index: r.outcome for r in result.items}
    assert sorted(i for i, o in outcomes.items() if o == "conflict") == taken
    assert sorted(i for i, o in outcomes.items() if o == "accepted") == [
        i for i in range(64) if i not in taken
    ]
    for index in taken:
        error = result.items[index].error
        assert isinstance(error, LessonConflict) and error.holder is not None
        assert error.holder.request_id == f"theirs-{index}"
    # The batch presumes its slots are new (no reads); beaten, it decides again on fresh
    # state and saves whole; beaten three times, it splits in two halves. Never 60-odd.
    batch_transactions = postgres_store.count_transactions() - before - len(taken)
    assert batch_transactions == transactions
    ledger.close()


def test_an_atomic_batch_writes_all_in_one_transaction(postgres_store: Store) -> None:
    ledger = postgres_store.open()

    result = ledger.request_batch(week(50, "a"), mode="atomic", batch_id="atomic-1")

    assert result.written and result.summary["accepted"] == 50
    assert postgres_store.count_transactions() == 1


@pytest.mark.parametrize("spoiler", ["conflict", "invalid", "duplicate"])
def test_an_atomic_batch_with_any_rejection_writes_nothing(
    ledger: LessonLedger, store: Store, spoiler: str
) -> None:
    ledger.request_lesson(**item("12:00-12:30", "holder", actor="alice"))
    written = store.count_events()
    items = week(10, "a")
    if spoiler == "conflict":
        items.append(item("12:00-12:30", "late"))
    elif spoiler == "invalid":
        items.append(item("25:00-26:00", "bad"))
    else:
        items.append({**items[0], "request_id": "again"})

    result = ledger.request_batch(items, mode="atomic")

    assert not result.written
    assert store.count_events() == written
    expected = {"conflict": "conflict", "invalid": "invalid", "duplicate": "duplicate_in_batch"}
    assert result.items[-1].outcome == expected[spoiler]
    assert {r.outcome for r in result.items[:10]} == {"aborted"}
    assert all(r.position is None for r in result.items)


def test_a_repeated_atomic_batch_is_replayed_and_writes_nothing(
    ledger: LessonLedger, store: Store
) -> None:
    items = week(5, "a")
    ledger.request_batch(items, mode="atomic")
    written = store.count_events()

    again = ledger.request_batch(items, mode="atomic")

    assert again.written and again.summary["replayed"] == 5
    assert store.count_events() == written


def test_a_batch_over_500_items_is_rejected_whole(ledger: LessonLedger, store: Store) -> None:
    with pytest.raises(InvalidLessonRequest) as raised:
        ledger.request_batch(week(501, "x"))
    assert raised.value.errors == [
        {"field": "items", "message": "a batch holds at most 500 requests, not 501"}
    ]
    with pytest.raises(InvalidLessonRequest):
        ledger.request_batch(week(2, "x"), mode="sometimes")


def test_an_unknown_field_in_an_item_makes_that_item_invalid(ledger: LessonLedger) -> None:
    result = ledger.request_batch([{**item("08:00-08:30", "r"), "studentName": "Ann"}])
    error = result.items[0].error
    assert result.items[0].outcome == "invalid" and isinstance(error, InvalidLessonRequest)
    assert error.errors == [{"field": "studentName", "message": "is not a known field"}]


def test_a_batch_of_large_requests_is_saved_in_chunks_of_about_a_mebibyte(
    postgres_store: Store,
) -> None:
    ledger = postgres_store.open()
    goal = "Decode multisyllable words with common suffixes. " * 20  # about 1 kB
    students = [{"id": f"s{i}", "grade": 4, "iepGoals": [goal] * 3} for i in range(30)]
    items = [
        {**one, "details": {"students": students, "subject": "reading"}} for one in week(30, "big")
    ]

    result = ledger.request_batch(items)

    assert result.summary["accepted"] == 30
    # About 95 kB each, 2.8 MB in all: three transactions, not one of 2.8 MB (which stalls
    # the PostgreSQL driver) and not thirty.
    assert postgres_store.count_transactions() == 3
