"""`lesson-ledger regenerate | cancel` as an operator runs them, on SQLite and PostgreSQL:
by id and by key, replayed by request id, refused with the holder named, recorded in the
lesson's history with who, why and from where."""

from __future__ import annotations

from uuid import UUID

from domain import lesson_id_for
from tests.support.command_line import cli
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
KEY = ["--provider", PROVIDER, "--school", "school-1", "--date", "2025-09-05"]
LESSON = lesson_id_for(PROVIDER, "school-1", "2025-09-05", "08:30-09:00")


def failed_lesson(store: Store) -> UUID:
    ledger = store.open()
    ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-1",
        lesson_date="2025-09-05",
        time_slot="8:30-9:00",
        request_id="req-1",
        actor="calendar",
    )
    ledger.record_failure(lesson_id=LESSON, attempt=1, reason="the model timed out")
    return LESSON


def test_a_failed_lesson_regenerated_then_cancelled(store: Store) -> None:
    lesson = str(failed_lesson(store))
    regenerate = ["regenerate", lesson, "--request-id", "regen-1", "--actor", "ops", "--json"]

    first = cli(*regenerate, "--reason", "timed out", database_url=store.url)
    again = cli(*regenerate, "--reason", "timed out", database_url=store.url)

    assert first.exit_code == 0, first.stderr
    assert (first.json()["outcome"], first.json()["attempt"]) == ("accepted", 2)
    assert (again.json()["outcome"], again.json()["attempt"]) == ("replayed", 2)
    refused = cli(
        "regenerate", lesson, "--request-id", "regen-2", "--actor", "bob", database_url=store.url
    )
    assert refused.exit_code == 1
    assert "only a generated or failed lesson can be regenerated" in refused.stderr
    assert "'regen-1' by 'ops'" in refused.stderr  # the holder

    cancel = ["cancel", *KEY, "--slot", "08:30 - 09:00", "--request-id", "cancel-1"]
    cancelled = cli(*cancel, "--actor", "ops", "--reason", "moved", database_url=store.url)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert "accepted" in cancelled.stdout
    twice = cli(
        "cancel", lesson, "--request-id", "cancel-2", "--actor", "bob", database_url=store.url
    )
    assert twice.exit_code == 1 and "can be cancelled" in twice.stderr

    history = cli("history", lesson, "--json", database_url=store.url).json()
    entries = [(e["event"], e["request_id"], e["actor"], e["source"]) for e in history["entries"]]
    assert entries == [
        ("OpenedByRequest", "req-1", "calendar", "api"),
        ("GenerationFailed", "req-1", "worker", "worker"),
        ("LessonRequested", "regen-1", "ops", "cli"),
        ("RequestRejected", "regen-2", "bob", "cli"),
        ("LessonCancelled", "cancel-1", "ops", "cli"),
        ("RequestRejected", "cancel-2", "bob", "cli"),
    ]
    assert history["entries"][2]["changes"]["reason"] == "timed out"
    assert history["entries"][4]["changes"]["reason"] == "moved"
    assert history["state"]["status"] == "cancelled"


def test_a_lesson_that_is_not_there_is_named_as_asked_for(store: Store) -> None:
    by_key = cli(
        "cancel", *KEY, "--slot", "10:00-10:30", "--request-id", "c-1", database_url=store.url
    )
    by_id = cli("regenerate", str(LESSON), "--request-id", "r-1", database_url=store.url)
    neither = cli("cancel", "--request-id", "c-1", database_url=store.url)

    assert by_key.exit_code == 1
    assert "no lesson for provider" in by_key.stderr and "'10:00-10:30'" in by_key.stderr
    assert by_id.exit_code == 1 and f"no lesson has the id {LESSON}" in by_id.stderr
    assert neither.exit_code == 2 and "LESSON_ID" in neither.stderr
