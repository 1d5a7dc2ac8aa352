"""`students encrypt-existing`: the events written before students' data was sealed, sealed
in place. Only the students' parts, the content, and the fingerprints (made keyed) of those
events change; every other byte of the log stays (an export before and `verify-export
--except-student-data` after prove it).

It goes through the log in order, a page per transaction, and stores its position with
each page, so it resumes where it stopped (also after SIGKILL); an event already sealed is
left alone, so running it again changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from adapters.eventstore.slots import EventSourcedSlots
from adapters.keys.sealing import Sealer
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from domain.errors import LedgerUnavailable
from domain.fingerprint import rekeyed
from domain.lesson import LessonSlot
from domain.sealed import PLAIN

NAME = "encrypt-existing"
PAGE_SIZE = 200
PAGE_PAUSE_SETTING = "LESSON_LEDGER_TEST_MIGRATION_PAUSE"
"""Test-only: seconds to wait inside each page's transaction (to kill the process there)."""


@dataclass(frozen=True)
class Migrated:
    """What a run did: from where, to where, how many events it sealed."""

    start: int
    position: int
    sealed: int


def encrypt_existing(
    slots: EventSourcedSlots,
    sealer: Sealer,
    database: Database,
    on_progress: Callable[[int, int], None] | None = None,
    page_size: int = PAGE_SIZE,
) -> Migrated:
    """Seal every event written in plain text; see the module docstring."""
    sql = sealer.keys.sql
    progress = sql.table("migrations")
    try:
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {progress}"
            " (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
        )
    except LedgerUnavailable:
        if database.create_tables:
            raise
        # Not a table `db migrate` makes: the owner makes it on its first run.
        raise LedgerUnavailable(
            f"`students {NAME}` rewrites events and keeps its place in a table of its own: "
            "run it as the role that owns the schema, with table creation on "
            "(LESSON_LEDGER_CREATE_TABLES=true)"
        ) from None
    start = position = _position(sql, progress)
    head = slots.recorder.max_notification_id() or 0
    sealed = 0
    while True:
        notifications = slots.recorder.select_notifications(
            start=position, limit=page_size, inclusive_of_start=False
        )
        if not notifications:
            if sealed and database.kind == "sqlite":
                _forget_old_pages(sql)
            return Migrated(start, position, sealed)
        rewrites: list[tuple[bytes, int]] = []
        for notification in notifications:
            event = slots.mapper.to_domain_event(notification)
            rewritten = _sealed(event, slots, sealer)
            if rewritten is not None:
                rewrites.append((slots.mapper.to_stored_event(rewritten).state, notification.id))
        position = notifications[-1].id
        _commit(sql, database, progress, rewrites, position)
        sealed += len(rewrites)
        if on_progress is not None:
            on_progress(position, max(head, position))


def _sealed(event: Any, slots: EventSourcedSlots, sealer: Sealer) -> Any | None:
    """The event with its plain parts sealed and its fingerprint keyed; None when it has
    nothing written before sealing."""
    changes: dict[str, Any] = {}
    fields = vars(event)
    print_key = sealer.print_key
    if isinstance(fields.get("fingerprint"), str):
        keyed = rekeyed(fields["fingerprint"], print_key)
        if keyed != fields["fingerprint"]:
            changes["fingerprint"] = keyed
    students = fields.get("students")
    if students and any(PLAIN in part for part in students):
        lesson = _slot(slots, event.originator_id, event.originator_version)
        plain = [p[PLAIN] for p in students if PLAIN in p]
        sealed = sealer.seal_students([(lesson.key, plain)], keys_stored_now=True)[0]
        changes["students"] = _merged(students, sealed)
    content = fields.get("content")
    if isinstance(content, dict) and PLAIN in content:
        lesson = _slot(slots, event.originator_id, event.originator_version - 1)
        generated = isinstance(event, LessonSlot.LessonGenerated)
        for_students = (lesson.students or []) if generated else []
        changes["content"] = sealer.seal_content(
            event.originator_id, lesson.lesson_date, for_students, content[PLAIN]
        )
    return replace(event, **changes) if changes else None


def _merged(parts: list[dict[str, Any]], sealed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts in their order, each plain one replaced by its sealed one."""
    fresh = iter(sealed)
    return [next(fresh) if PLAIN in part else part for part in parts]


def _slot(slots: EventSourcedSlots, lesson_id: UUID, version: int) -> LessonSlot:
    """The slot as it was at `version` (its key, and its students then)."""
    slot: Any = None
    for event in slots.events(lesson_id, max(version, 1)):
        slot = event.mutate(slot)
    assert isinstance(slot, LessonSlot)
    return slot


def _forget_old_pages(sql: SqlStore) -> None:
    """SQLite keeps the plain text the rewrites replaced in free pages and in its WAL:
    rebuild the file and empty the WAL (best effort: a reader holding an old snapshot
    keeps the WAL until it lets go). PostgreSQL's dead rows go with its vacuum."""
    sql.run("VACUUM")
    sql.run("PRAGMA wal_checkpoint(TRUNCATE)")


def _position(sql: SqlStore, table: str) -> int:
    rows = sql.run(f"SELECT position FROM {table} WHERE name = %s", (NAME,))
    return int(rows[0][0]) if rows else 0


def _commit(
    sql: SqlStore, database: Database, progress: str, rewrites: list[tuple[bytes, int]], at: int
) -> None:
    """A page's rewritten states and the position after it, in one transaction."""
    events = sql.table(database.events_table.rsplit(".", 1)[-1])
    id_column = "rowid" if database.kind == "sqlite" else "notification_id"
    with sql.transaction() as cursor:
        for state, notification_id in rewrites:
            cursor.run(
                f"UPDATE {events} SET state = %s WHERE {id_column} = %s", (state, notification_id)
            )
        cursor.run(
            f"INSERT INTO {progress} (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (NAME, at),
        )
        pause = os.environ.get(PAGE_PAUSE_SETTING)
        if pause:
            time.sleep(float(pause))
