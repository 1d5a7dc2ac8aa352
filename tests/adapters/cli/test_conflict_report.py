"""`lesson-ledger report conflicts` after a scripted race: two calendar batches (two
batch ids) request the same slots at the same moment, spelled `8:30-9:00` by one and
`08:30 - 09:00` by the other, while four single requests fight over one more slot in
four spellings; then the refusals the incident report suspected (no time slot, no
school). The report, as the command prints it, reproduces every count."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import InvalidLessonRequest, LessonConflict, lesson_id_for
from tests.support.command_line import cli
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
HOURS = range(7, 19)  # twelve slots both batches want
GROUP = {
    "students": [{"id": "st-1", "grade": 3}],
    "subject": "Reading",
    "subjectType": "ela",
    "teacherRole": "resource",
    "duration": 30,
}
KEY = (
    "--provider",
    PROVIDER,
    "--school",
    "school-1",
    "--date",
    "2025-09-05",
    "--slot",
    "8:30-9:00",
)
SINGLE_SPELLINGS = ("19:00-19:30", "19:00 - 19:30", "19:00\u201319:30", " 19:00-19:30 ")


def batch_items(batch: str, padded: bool) -> list[dict[str, Any]]:
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


def race(store: Store) -> dict[str, Any]:
    """Everyone starts at one barrier; each thread has its own ledger (connection)."""
    racers = 2 + len(SINGLE_SPELLINGS)
    start = threading.Barrier(racers)
    answers: dict[str, Any] = {}
    ledgers = [store.open() for _ in range(racers)]

    def batch(ledger: Any, batch_id: str, padded: bool) -> None:
        start.wait(timeout=30)
        answers[batch_id] = ledger.request_batch(batch_items(batch_id, padded), batch_id=batch_id)

    def single(ledger: Any, index: int, slot: str) -> None:
        start.wait(timeout=30)
        try:
            answers[f"single-{index}"] = ledger.request_lesson(
                provider_id=PROVIDER.upper(),
                school_id="school-1",
                lesson_date="2025-09-05",
                time_slot=slot,
                request_id=f"single-{index}",
                actor=f"teacher-{index}",
            )
        except LessonConflict as conflict:
            answers[f"single-{index}"] = conflict

    threads = [
        threading.Thread(target=batch, args=(ledgers[0], "week-36-tab-1", False)),
        threading.Thread(target=batch, args=(ledgers[1], "week-36-tab-2", True)),
        *(
            threading.Thread(target=single, args=(ledgers[2 + i], i, slot))
            for i, slot in enumerate(SINGLE_SPELLINGS)
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a racer did not finish within a minute"
    return answers


def refuse_the_suspects(store: Store) -> None:
    ledger = store.open()
    suspects: list[dict[str, str | None]] = [
        {"time_slot": "structured"},
        {"time_slot": None},
        {"school_id": None},
        {"school_id": "undefined"},
        {"school_id": "   "},
        {"lesson_date": "2025-02-30"},
    ]
    for index, wrong in enumerate(suspects):
        fields = {
            "provider_id": PROVIDER,
            "school_id": "school-1",
            "lesson_date": "2025-09-05",
            "time_slot": "20:00-20:30",
            "request_id": f"suspect-{index}",
            "actor": "calendar",
            **wrong,
        }
        with pytest.raises(InvalidLessonRequest):
            ledger.request_lesson(**fields)


def test_the_report_reproduces_a_scripted_race(store: Store) -> None:
    answers = race(store)
    refuse_the_suspects(store)
    accepted = sum(answers[b].summary["accepted"] for b in ("week-36-tab-1", "week-36-tab-2"))
    assert accepted == len(HOURS)  # the race itself: one winner per slot

    ran = cli("report", "conflicts", "--json", database_url=store.url)
    assert ran.exit_code == 0, ran.stderr
    report = ran.json()
    contested = len(HOURS) + len(SINGLE_SPELLINGS) - 1
    assert report["causes"] == {
        "slot_already_held": contested,
        "wrong_state": 0,
        "stale_generation": 0,
        "idempotency_mismatch": 0,
        "missing_time_slot": 2,
        "missing_school": 3,
        "invalid_input": 1,
    }
    # The most contested slot is the one four people asked for at once.
    single_slot = str(lesson_id_for(PROVIDER, "school-1", "2025-09-05", "19:00-19:30"))
    top = report["contested"][0]
    assert (top["lesson_id"], top["rejections"]) == (single_slot, len(SINGLE_SPELLINGS) - 1)
    assert set(top["requesters"]) == {f"teacher-{i}" for i in range(len(SINGLE_SPELLINGS))}
    assert all(slot["rejections"] == 1 for slot in report["contested"][1:])

    between_batches = [c for c in report["collisions"] if c["batch"].startswith("week-36")]
    assert {(c["batch"], c["holder_batch"]) for c in between_batches} <= {
        ("week-36-tab-1", "week-36-tab-2"),
        ("week-36-tab-2", "week-36-tab-1"),
    }
    assert sum(c["count"] for c in between_batches) == len(HOURS)
    assert all(0 <= c["min_gap_seconds"] <= c["max_gap_seconds"] < 60 for c in between_batches)
    singles = [c for c in report["collisions"] if c["batch"] == "(no batch)"]
    assert [c["count"] for c in singles] == [len(SINGLE_SPELLINGS) - 1]

    clashes = {clash["lesson_id"]: clash for clash in report["spellings"]}
    assert len(clashes) == len(HOURS) + 1
    assert len(clashes[single_slot]["spellings"]) == len(SINGLE_SPELLINGS)
    eight_thirty = str(lesson_id_for(PROVIDER, "school-1", "2025-09-05", "08:30-09:00"))
    assert {s["time_slot"] for s in clashes[eight_thirty]["spellings"]} == {
        "8:30-9:00",
        "08:30 - 09:00",
    }

    table = cli("report", "conflicts", database_url=store.url)
    assert table.exit_code == 0
    for seen in (
        f"slot already held     {contested}",
        "missing school     3",
        "week-36-tab-",
        "time_slot='8:30-9:00'",
        "time_slot='08:30 - 09:00'",
        "teacher-0, teacher-1, teacher-2, teacher-3",
    ):
        assert seen in _squeezed(table.stdout), seen


def test_the_report_narrows_to_a_school_and_a_time(store: Store) -> None:
    race(store)
    other_school = cli(
        "report", "conflicts", "--school", "school-2", "--json", database_url=store.url
    )
    assert other_school.json()["causes"]["slot_already_held"] == 0
    assert other_school.json()["contested"] == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    future = cli("report", "conflicts", "--since", later, "--json", database_url=store.url)
    assert sum(future.json()["causes"].values()) == 0
    bad = cli("report", "conflicts", "--provider", "nobody", database_url=store.url)
    assert bad.exit_code == 2 and "invalid: --provider: is not a UUID" in bad.stderr
    # Swapped times reported nothing, as if no request had been turned away.
    swapped = cli(
        "report", "conflicts", "--since", "2025-09-05", "--until", "2025-09-01",
        database_url=store.url,
    )  # fmt: skip
    assert swapped.exit_code == 2
    assert swapped.stderr.strip() == (
        "invalid: --until: 2025-09-01T00:00:00+00:00 is before --since (2025-09-05T00:00:00+00:00)"
    )


def _squeezed(text: str) -> str:
    """The table's text without its borders, columns one run of spaces apart."""
    lines = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")]
        lines.append("     ".join(cell for cell in cells if cell))
    return "\n".join(lines)


def test_a_batch_file_that_holds_one_lesson_twice_is_in_the_report(
    store: Store, tmp_path: Path
) -> None:
    """The calendar's week sent with two groups on one slot, spelled two ways: the batch
    answers `duplicate_in_batch`, and the report shows the batch against itself."""
    groups = [
        {"lessonDate": "2025-09-05", "timeSlot": slot, "schoolId": "school-1", **GROUP}
        for slot in ("8:30-9:00", "09:00-09:30", "08:30 - 09:00")
    ]
    week = tmp_path / "week-36.json"
    week.write_text(json.dumps({"batch": groups}))

    sent = cli(
        "batch",
        str(week),
        "--provider",
        PROVIDER,
        "--batch-id",
        "week-36",
        "--json",
        database_url=store.url,
    )

    assert sent.exit_code == 0, sent.stderr
    assert [i["outcome"] for i in sent.json()["items"]] == [
        "accepted",
        "accepted",
        "duplicate_in_batch",
    ]
    table = _squeezed(cli("report", "conflicts", database_url=store.url).stdout)
    assert "week-36     week-36 (itself: one lesson sent twice)     1" in table
    assert "time_slot='8:30-9:00'" in table and "time_slot='08:30 - 09:00'" in table
    history = cli("history", "--json", *KEY, database_url=store.url).json()
    assert [(e["event"], e["request_id"]) for e in history["entries"]] == [
        ("OpenedByRequest", "week-36-0"),
        ("RequestRejected", "week-36-2"),
    ]
