"""Erasing students' data from an append-only log: by destroying the keys it was sealed
under (adapters/keys/sealing.py), never by rewriting an event.

- A student: their key goes; every part of theirs, in every lesson, and every content made
  for them, can no longer be opened.
- Retention: the keys of lesson dates before a cut-off go; those days' students' parts and
  contents can no longer be opened (the lessons, their keys, attempts and audit trail stay).

Each erasure is recorded in the erasure log (adapters/keys/erasure_log.py: when, who,
why, how many keys and lessons), with nothing of the student in it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from adapters.keys.erasure_log import Erasure, ErasureKind, ErasureLog
from adapters.keys.sealing import DATE_OWNER, Sealer
from adapters.storage.database import Database
from adapters.storage.sqlstore import Cursor, SqlStore
from domain.commands import check_actor, check_erasure_reason, check_fields, check_student_id
from domain.errors import one_line

DAY_SECONDS = 24 * 3600
log = logging.getLogger("lesson_ledger.retention")

__all__ = ["DailyRetention", "Erasure", "ErasureKind", "Erasures"]


class Erasures:
    """Erases students' data in the database the sealer's keys live in."""

    def __init__(self, sealer: Sealer, database: Database) -> None:
        self.sealer = sealer
        self.sql: SqlStore = sealer.keys.sql
        self.log = ErasureLog(self.sql)
        self.events_table = database.events_table
        self._postgres = database.kind == "postgresql"

    def erase_student(self, student_id: str, *, actor: str, reason: str) -> Erasure | None:
        """Destroy the student's key; None when there is none (an unknown student, or
        one erased before). InvalidLessonRequest names a blank id or reason."""
        student_id, actor, reason = check_fields(
            [
                ("student_id", check_student_id, student_id),
                ("actor", check_actor, actor),
                ("reason", check_erasure_reason, reason),
            ]
        )
        owner, keys = self.sealer.student_owner(student_id), self.sealer.keys
        # The key goes with its record, or neither does: an erasure is never unrecorded.
        with self.sql.transaction() as cursor:
            destroyed = keys.destroying(cursor, [owner])
            erasure = None
            if destroyed:
                lessons = self._lessons_of(cursor, destroyed)
                erasure = self._erasure("student", actor, reason, len(destroyed), lessons)
                self.log.recording(cursor, erasure)
        keys.forget([owner], destroyed)
        return erasure

    def retention(
        self,
        before: date,
        *,
        actor: str,
        reason: str,
        dry_run: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Erasure:
        """Destroy the keys of every lesson date before `before` (a dry run only counts
        them); `on_progress(done, total)` after each date."""
        actor, reason = check_fields(
            [("actor", check_actor, actor), ("reason", check_erasure_reason, reason)]
        )
        days = {
            date.fromisoformat(owner.removeprefix(DATE_OWNER)): owner
            for owner in self.sealer.keys.owners(DATE_OWNER)
        }
        owners = [owner for day, owner in sorted(days.items()) if day < before]
        # The days of a run before have no key left: their lessons are not reached again.
        lessons = self._lessons_on({day for day in days if day < before})
        if dry_run:
            return Erasure("", "retention", datetime.now(UTC), actor, reason, len(owners), lessons)
        keys, destroyed = self.sealer.keys, list[str]()
        # As a student's: the keys go with the run's record, or none does (a few rows a
        # day of lessons, so one transaction; another process's run waits, then finds
        # them gone and records nothing).
        with self.sql.transaction() as cursor:
            for done, owner in enumerate(owners, start=1):
                # A day's key is never stored by an append: none beside it to look for.
                destroyed += keys.destroying(cursor, [owner], beside=False)
                if on_progress is not None:
                    on_progress(done, len(owners))
            erasure = Erasure("", "retention", datetime.now(UTC), actor, reason, 0, 0)
            if destroyed:  # else nothing was due (another process ran it first): no record
                erasure = self._erasure("retention", actor, reason, len(destroyed), lessons)
                self.log.recording(cursor, erasure)
        keys.forget(owners, destroyed)
        return erasure

    def records(self) -> list[Erasure]:
        """Every erasure, in the order recorded (oldest first)."""
        return self.log.records()

    @staticmethod
    def _erasure(kind: ErasureKind, actor: str, reason: str, keys: int, lessons: int) -> Erasure:
        return Erasure(uuid.uuid4().hex, kind, datetime.now(UTC), actor, reason, keys, lessons)

    def _lessons_of(self, cursor: Cursor, key_ids: list[str]) -> int:
        """How many lessons hold something sealed under these keys (a scan of the log: an
        erasure is rare, and the ids are in the stored state as text)."""
        if self._postgres:
            match = "position(convert_to(%s, 'UTF8') in state) > 0"
        else:
            match = "instr(CAST(state AS TEXT), %s) > 0"
        where = " OR ".join([match] * len(key_ids))
        rows = cursor.run(
            f"SELECT count(DISTINCT originator_id) FROM {self.events_table} WHERE {where}",
            key_ids,
        )
        return int(rows[0][0])

    def _lessons_on(self, days: set[date]) -> int:
        """How many lessons the read model has on these days."""
        if not days:
            return 0
        lessons = self.sql.table("lessons")
        try:
            rows = self.sql.run(
                f"SELECT lesson_date, count(*) FROM {lessons} WHERE lesson_date <= %s "
                "GROUP BY lesson_date",
                (max(days).isoformat(),),
            )
        except Exception:  # no read model in this database yet: nothing counted
            return 0
        # A DATE on PostgreSQL, text on SQLite: both read as YYYY-MM-DD.
        wanted = {day.isoformat() for day in days}
        return sum(int(count) for day, count in rows if str(day) in wanted)


def retention_cut_off(days: int, today: date | None = None) -> date:
    """The first lesson date retention keeps: `days` before today; so many days that they
    reach back past year 1 keep every date (nothing is older)."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=days) if days < today.toordinal() else date.min


class DailyRetention:
    """Retention run by the server, once at start and then once a day, in a thread of its
    own (`LESSON_LEDGER_RETENTION_DAYS`); several server processes may run it: what one
    erased, the others find erased."""

    def __init__(self, erasures: Erasures, days: int) -> None:
        self.erasures = erasures
        self.days = days
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> DailyRetention:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            cut_off = retention_cut_off(self.days)
            try:
                done = self.erasures.retention(cut_off, actor="retention", reason="daily")
                log.info("retention applied", extra={"keys": done.keys, "before": str(cut_off)})
            except Exception as error:  # an outage: the next day's run catches up
                log.warning("retention not applied", extra={"error": one_line(error)})
            self._stop.wait(DAY_SECONDS)
