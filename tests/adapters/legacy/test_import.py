"""Importing rows of the old table through the ledger: every case the incident report
names is reported, nothing is merged silently, and a re-run adds nothing."""

from __future__ import annotations

from typing import Any

from domain import LessonConflict, LessonLedger, lesson_id_for
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def row(legacy_id: str, slot: str | None, school: str | None = "school-1") -> dict[str, Any]:
    return {
        "id": legacy_id,
        "provider_id": PROVIDER,
        "school_id": school,
        "lesson_date": "2025-09-05",
        "time_slot": slot,
        "content": '{"lesson": {"title": "Short vowels"}}',
        "created_at": "2025-09-01T08:00:00",
        "updated_at": "2025-09-01T08:05:00+00:00",
    }


ROWS = [
    row("1", "8:30-9:00"),
    row("2", "08:30 - 09:00"),  # the same slot as row 1, spelled otherwise
    row("3", "structured"),
    row("4", "structured"),
    row("5", "10:00-10:30", school=None),
    row("6", "08:00"),
    row("7", "on-demand-abc"),
]


def test_every_case_is_reported_and_a_rerun_adds_nothing(
    ledger: LessonLedger, store: Store
) -> None:
    dry = ledger.import_lessons(ROWS, dry_run=True)
    assert store.count_events() == 0 and not dry.written

    first = ledger.import_lessons(ROWS)
    written = store.count_events()
    again = ledger.import_lessons(ROWS, actor="someone-else")

    outcomes = [item.outcome for item in first.items]
    assert outcomes == [item.outcome for item in dry.items]
    assert outcomes == [
        "accepted",
        "duplicate_in_batch",
        "accepted",
        "accepted",
        "invalid",
        "accepted",
        "accepted",
    ]
    assert [item.outcome for item in again.items] == [
        "replayed",
        "duplicate_in_batch",
        "replayed",
        "replayed",
        "invalid",
        "replayed",
        "replayed",
    ]
    assert store.count_events() == written
    # Row 2's collision with row 1 is in the lesson's history once, as a held slot's is.
    history = ledger.history(first.items[0].lesson_id)  # type: ignore[arg-type]
    assert [(e.event, e.request_id) for e in history.entries] == [
        ("Opened", "import-1"),
        ("LessonImported", "import-1"),
        ("RequestRejected", "import-2"),
    ]
    missing_school = first.items[4].error
    assert missing_school is not None and "school_id" in str(missing_school)

    imported = ledger.get_lesson(first.items[0].lesson_id)  # type: ignore[arg-type]
    assert imported is not None
    assert (imported.status, imported.legacy_id, imported.model) == ("generated", "1", "legacy")
    assert imported.content == {"lesson": {"title": "Short vowels"}}
    on_demand = [ledger.get_lesson(first.items[i].lesson_id) for i in (2, 3, 6)]  # type: ignore[arg-type]
    assert [lesson.time_slot for lesson in on_demand] == [  # type: ignore[union-attr]
        "on-demand-legacy-3",
        "on-demand-legacy-4",
        "on-demand-abc",
    ]
    start_only = ledger.get_lesson(lesson_id_for(PROVIDER, "school-1", "2025-09-05", "8:00"))
    assert start_only is not None
    assert (start_only.time_slot, start_only.flags) == ("08:00", ("start_only_slot",))


def test_a_row_colliding_with_a_held_slot_is_reported_once(
    ledger: LessonLedger, store: Store
) -> None:
    ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-1",
        lesson_date="2025-09-05",
        time_slot="08:30-09:00",
        request_id="live",
        actor="alice",
    )

    first = ledger.import_lessons([row("9", "8:30-9:00")])
    written = store.count_events()
    again = ledger.import_lessons([row("9", "8:30-9:00")])

    for result in (first, again):
        error = result.items[0].error
        assert result.items[0].outcome == "conflict" and isinstance(error, LessonConflict)
        assert error.holder is not None and error.holder.request_id == "live"
    assert store.count_events() == written  # recorded once, not once per run
    history = ledger.history(first.items[0].lesson_id)  # type: ignore[arg-type]
    assert [e.event for e in history.entries][-1] == "RequestRejected"
    assert history.entries[-1].request_id == "import-9"
