"""`lesson-ledger students encrypt-existing` on a database the release before sealing
wrote: it seals the students' parts, the content and the fingerprints in place, changes
nothing else (an export before, `verify-export --except-student-data` after), and resumes
after SIGKILL, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from adapters.eventstore import event_log, event_store
from adapters.keys.migration import PAGE_PAUSE_SETTING, encrypt_existing
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from tests.support import ROOT
from tests.support.command_line import cli
from tests.support.stores import Store
from tests.support.student_data import (
    PROVIDER,
    all_markers,
    as_before_sealing,
    database_bytes,
    generate,
    request,
    student,
)


def written_before_sealing(ledger: LessonLedger, lessons: int = 2) -> list[UUID]:
    """Lessons for Ada and Ben, requested, generated, regenerated and refused, as the
    release before sealing wrote them."""
    before = as_before_sealing(ledger)
    ids = []
    for n in range(lessons):
        lesson_id = request(before, f"{8 + n // 4:02d}:{(n % 4) * 15:02d}-23:00", "ada", "ben")
        generate(before, lesson_id, *all_markers("ada"))
        before.regenerate(lesson_id=lesson_id, request_id=f"again-{n}", actor="teacher")
        ids.append(lesson_id)
    return ids


def test_the_dump_shows_what_was_written_in_plain_text(store: Store, ledger: LessonLedger) -> None:
    written_before_sealing(ledger)
    assert b"MARKER-ADA-IEP" in database_bytes(store)  # what the migration must remove


def test_encrypt_existing_seals_only_the_students_data(
    store: Store, ledger: LessonLedger, tmp_path: Path
) -> None:
    ids = written_before_sealing(ledger)
    states = [ledger.get_lesson(lesson_id) for lesson_id in ids]
    export = tmp_path / "before.jsonl"
    assert cli("export", "--output", str(export), database_url=store.url).exit_code == 0

    done = encrypt_existing(event_store(ledger), sealer_of(ledger), store.database)

    assert done.sealed > 0
    dumped = database_bytes(store)
    for marker in all_markers("ada", "ben"):
        assert marker.encode() not in dumped, marker
    assert [ledger.get_lesson(lesson_id) for lesson_id in ids] == states  # all still readable
    plain = cli("verify-export", str(export), database_url=store.url)
    assert plain.exit_code == 1 and "data.content" in plain.stdout  # the content did change
    verified = cli("verify-export", str(export), "--except-student-data", database_url=store.url)
    assert verified.exit_code == 0, verified.stdout
    # The same request again is still a replay (its fingerprint was keyed, not changed).
    again = ledger.request_lesson(**{**_first_request(ledger, ids[0]), "actor": "teacher"})
    assert again.outcome == "replayed"
    assert encrypt_existing(event_store(ledger), sealer_of(ledger), store.database).sealed == 0


def _first_request(ledger: LessonLedger, lesson_id: UUID) -> dict[str, Any]:
    entry = ledger.history(lesson_id).entries[0]
    return {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-08",
        "time_slot": entry.changes["time_slot"],
        "request_id": entry.request_id,
        "details": {"students": [student("ada"), student("ben")], "subject": "Reading"},
    }


def test_a_migration_killed_half_way_resumes_and_finishes(
    store: Store, ledger: LessonLedger
) -> None:
    ids = written_before_sealing(ledger, lessons=12)
    states = [ledger.get_lesson(lesson_id) for lesson_id in ids]
    events = store.count_events()
    env = {**os.environ, PAGE_PAUSE_SETTING: "0.3", "COLUMNS": "200"}
    command = ["students", "encrypt-existing", "--page-size", "5", "--database-url", store.url]
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _position(store) == 0:  # a first page committed
            assert time.monotonic() < deadline, "the migration did not start"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    stopped_at = _position(store)
    assert 0 < stopped_at < (event_log(ledger).head())

    resumed = encrypt_existing(event_store(ledger), sealer_of(ledger), store.database)

    assert resumed.start == stopped_at and resumed.sealed > 0
    assert store.count_events() == events
    assert [ledger.get_lesson(lesson_id) for lesson_id in ids] == states
    assert encrypt_existing(event_store(ledger), sealer_of(ledger), store.database).sealed == 0


def _position(store: Store) -> int:
    table = "migrations" if store.kind == "sqlite" else f'"{store.database.schema}".migrations'
    try:
        rows = store.query(f"SELECT position FROM {table}")
    except Exception:
        return 0
    return int(rows[0][0]) if rows else 0
