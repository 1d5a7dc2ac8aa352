"""`lesson-ledger lessons` as an operator runs it, on SQLite and PostgreSQL: the read
model's lessons filtered and paged, never their content, and a read model behind the
log said so."""

from __future__ import annotations

import base64
import re

import pytest

from domain import LessonLedger, lesson_id_for
from tests.support.command_line import cli
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
DEEP_CURSOR = base64.urlsafe_b64encode(b"[" * 5000).decode()
MARKER = "MARKER-7c1e"  # in a student's details and in generated content


def requested(ledger: LessonLedger, school: str, day: str, slot: str) -> None:
    ledger.request_lesson(
        provider_id=PROVIDER,
        school_id=school,
        lesson_date=day,
        time_slot=slot,
        request_id=f"{school}-{day}-{slot}",
        actor="calendar",
        details={"students": [{"id": "st-1", "grade": 3, "iepGoals": [MARKER]}], "subject": "Math"},
    )


@pytest.fixture
def three_lessons(store: Store) -> Store:
    """Two lessons of school-1 on one day (one failed, one generated), one of school-2."""
    ledger = store.open()
    requested(ledger, "school-1", "2025-09-05", "08:30-09:00")
    requested(ledger, "school-1", "2025-09-05", "09:00-09:30")
    requested(ledger, "school-2", "2025-09-08", "08:30-09:00")
    failed = lesson_id_for(PROVIDER, "school-1", "2025-09-05", "08:30-09:00")
    ledger.record_failure(lesson_id=failed, attempt=1, reason="the model timed out")
    generated = lesson_id_for(PROVIDER, "school-1", "2025-09-05", "09:00-09:30")
    ledger.record_generation(
        lesson_id=generated, attempt=1, content={"lesson": {"title": MARKER}}, model="m"
    )
    return store


def test_the_failed_lessons_of_a_day(three_lessons: Store) -> None:
    url = three_lessons.url
    behind = cli("lessons", "--json", database_url=url)
    assert behind.exit_code == 0 and behind.json()["items"] == []
    assert "the read model is at position 0 of 5" in behind.stderr
    assert cli("projections", "catch-up", database_url=url).exit_code == 0

    failed = cli("lessons", "--status", "failed", "--json", database_url=url)

    assert failed.exit_code == 0 and failed.stderr == ""
    [lesson] = failed.json()["items"]
    assert (lesson["school_id"], lesson["time_slot"], lesson["failure_reason"]) == (
        "school-1",
        "08:30-09:00",
        "the model timed out",
    )
    assert "content" not in lesson
    table = cli("lessons", "--school", "school-1", database_url=url).stdout
    assert "failed" in table and "generated" in table and "the model timed out" in table
    assert "school-2" not in table
    for listed in (failed.stdout, table, cli("lessons", "--json", database_url=url).stdout):
        assert MARKER not in listed
    # In a terminal 120 wide the ids, dates, slots and statuses are whole (the ids were cut
    # short: the one thing `regenerate` needs); the provider gives way, and is said to
    # (it was squeezed to nothing, with no mark, as were the school and the request).
    narrow = cli("lessons", database_url=url, columns=120)
    for row in cli("lessons", "--json", database_url=url).json()["items"]:
        whole = [row["lesson_id"], row["lesson_date"], row["time_slot"], row["status"]]
        whole.append(row["school_id"])
        assert all(text in narrow.stdout for text in whole), (whole, narrow.stdout)
        assert row["provider_id"] not in narrow.stdout
    assert narrow.stderr.startswith("left out to fit 120 columns: provider, why, request (")
    wide = cli("lessons", database_url=url, columns=250)
    assert PROVIDER in wide.stdout and "left out" not in wide.stderr
    # In 80 columns (a terminal's default) the table's borders go too: each line fits,
    # rather than the terminal breaking every line of a table 89 wide.
    smallest = cli("lessons", database_url=url, columns=80)
    assert max(len(line) for line in smallest.stdout.splitlines()) <= 80, smallest.stdout
    for row in cli("lessons", "--json", database_url=url).json()["items"]:
        whole = [row["lesson_id"], row["lesson_date"], row["time_slot"], row["status"]]
        line = r"\s+".join(re.escape(str(text)) for text in [*whole, row["attempt"]])
        assert re.search(line, smallest.stdout), smallest.stdout
    assert smallest.stderr.startswith("left out to fit 80 columns: provider, why, request, school")


def test_pages_follow_the_cursor_and_filters_narrow(three_lessons: Store) -> None:
    url = three_lessons.url
    cli("projections", "catch-up", database_url=url)
    day = ["--from", "2025-09-05", "--to", "2025-09-05"]

    first = cli("lessons", *day, "--limit", "1", database_url=url).stdout
    cursor = first.split("more: --cursor ")[1].split()[0]
    second = cli("lessons", *day, "--limit", "1", "--cursor", cursor, database_url=url).stdout

    assert "08:30-09:00" in first and "09:00-09:30" not in first
    assert "09:00-09:30" in second and "more:" not in second
    later = cli("lessons", "--from", "2025-09-06", "--json", database_url=url).json()
    assert [lesson["school_id"] for lesson in later["items"]] == ["school-2"]
    none = cli("lessons", "--school", "school-9", database_url=url)
    assert none.exit_code == 0 and "no lessons match" in none.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--status", "lost"], "--status: must be one of"),
        (["--from", "2025-13-01"], "--from: is not a real calendar date"),
        (["--limit", "501"], "--limit: must be a whole number from 1 to 500"),
        (["--provider", "nobody"], "--provider"),
        (["--cursor", "not-ours"], "--cursor: is not a cursor this API returned"),
        (["--cursor", DEEP_CURSOR], "--cursor: is not a cursor this API returned"),
        # Swapped dates matched nothing: "no lessons match".
        (
            ["--from", "2025-09-05", "--to", "2025-09-01"],
            "--to: 2025-09-01 is before the first date (2025-09-05)",
        ),
    ],
)
def test_a_bad_filter_is_named(store: Store, args: list[str], named: str) -> None:
    ran = cli("lessons", *args, database_url=store.url)
    assert ran.exit_code == 2 and named in ran.stderr
