"""The lessons read model on SQLite: the library's SQLite tracking recorder plus the
`lessons` table in the same database file.

Writes begin with BEGIN IMMEDIATE: a deferred transaction that reads the position and
then writes fails at once ("database is locked", no busy wait) when the ledger committed
events in between, which it does all the time. Readers never wait (WAL mode) and see
the table as of their snapshot, also during a swap.

SQLite has no way to rename an index, so the shadow is filled with its primary key and
unique constraint only, and the swap creates the secondary indexes under their live
names (readers are not blocked meanwhile; writers wait for the swap's commit).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import OperationalError, PersistenceError, StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder

from adapters.sqlite.locks import FileLock, ProcessLock
from adapters.storage.database import Database
from projections.lessons import COLUMNS, LessonRow
from projections.view import (
    LIVE,
    LessonQuery,
    LessonsView,
    RunnerLock,
    SafetyNetFired,
    Target,
    VerificationSnapshot,
    Wakeup,
    not_forward,
)

DEFAULT_POLL_INTERVAL = 0.1
"""Seconds between a SQLite follower's looks at the log: SQLite cannot notify."""
_MAX_VARIABLES = 900  # well under SQLite's limit on parameters per statement
_REBUILDS_TABLE = "projection_rebuilds"
_SECONDARY_INDEXES = {
    "provider_week_idx": "(provider_id, lesson_date, time_slot, lesson_id)",
    "school_date_idx": "(school_id, lesson_date, time_slot, lesson_id)",
    "date_idx": "(lesson_date, time_slot, lesson_id)",
}


def _create_table_sql(table: str) -> str:
    # The constraint's name is not bound to the table in SQLite, so the shadow carries
    # the live name already; its automatic indexes are renamed with the table.
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "lesson_id TEXT NOT NULL PRIMARY KEY, "
        "provider_id TEXT NOT NULL, school_id TEXT NOT NULL, lesson_date TEXT NOT NULL, "
        "time_slot TEXT NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "request_id TEXT, requested_by TEXT, requested_at TEXT, content TEXT, model TEXT, "
        "generated_at TEXT, failure_reason TEXT, version INTEGER NOT NULL, "
        "updated_at TEXT NOT NULL, "
        "CONSTRAINT lessons_unique_lesson UNIQUE (provider_id, school_id, lesson_date, time_slot))"
    )


def _create_indexes_sql(table: str) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS {table}_{suffix} ON {table} {columns}"
        for suffix, columns in _SECONDARY_INDEXES.items()
    ]


class PollingWakeup(Wakeup):
    """Waits a poll interval, or less when woken (e.g. by a command in this process)."""

    def __init__(self, interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self.interval = interval
        self._woken = threading.Event()

    def wait(self, timeout: float) -> None:
        self._woken.wait(max(0.0, min(timeout, self.interval)))
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        self._woken.set()


class SQLiteLessonsView(LessonsView, SQLiteTrackingRecorder):
    """The `lessons` table, its shadow, and their positions in the SQLite `tracking` table."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        *,
        database: Database,
        events_table: str = "stored_events",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        super().__init__(datastore)
        self.database = database
        self.events_table = events_table
        self.poll_interval = poll_interval

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            _create_table_sql(LIVE.table),
            *_create_indexes_sql(LIVE.table),
            f"CREATE TABLE IF NOT EXISTS {_REBUILDS_TABLE} ("
            "projection TEXT PRIMARY KEY, started_at TEXT NOT NULL)",
        ]

    def create_table(self) -> None:
        """The tracking table (the library's), the lessons table, and the live position."""
        super().create_table()
        self._start_live()

    # Positions.

    def _read_position(self, tracking_name: str) -> int | None:
        return self.max_tracking_id(tracking_name)

    # Transactions and store primitives.

    @contextmanager
    def _write_transaction(
        self, *, swap: bool = False, flush: bool = True
    ) -> Iterator[SQLiteCursor]:
        # Not the pool's writer connection (`get_connection(commit=True)`): the pool hands
        # out one writer at a time, and a thread waiting for it holds the pool's queue,
        # so readers of this process would wait behind a page waiting behind a swap (and
        # fail after the pool's timeout). SQLite itself serialises the writers:
        # BEGIN IMMEDIATE waits (busy timeout) for the database's write lock.
        # (An in-memory database keeps the pool's interlock: its shared cache needs it.)
        pool = self.datastore.pool
        conn = pool.get_connection(is_writer=True if pool.is_sqlite_memory_mode else None)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            except sqlite3.OperationalError as error:  # as the library's recorders say it
                raise OperationalError(str(error)) from error
            except sqlite3.Error as error:
                raise PersistenceError(str(error)) from error
            finally:
                cursor.sqlite_cursor.close()
        finally:
            pool.put_connection(conn)

    def _locked_position(self, cursor: SQLiteCursor, tracking_name: str) -> int | None:
        # BEGIN IMMEDIATE holds the database's write lock: nobody else can move it.
        cursor.execute(
            "SELECT notification_id FROM tracking WHERE application_name = ?", (tracking_name,)
        )
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def _store_position(self, cursor: SQLiteCursor, tracking_name: str, position: int) -> None:
        self._insert_tracking(cursor, Tracking(tracking_name, position))

    def _forget_position(self, cursor: SQLiteCursor, tracking_name: str) -> None:
        cursor.execute("DELETE FROM tracking WHERE application_name = ?", (tracking_name,))

    def _select_rows(
        self, cursor: SQLiteCursor, table: str, ids: Iterable[UUID]
    ) -> dict[UUID, LessonRow]:
        keys = [str(lesson_id) for lesson_id in ids]
        found: dict[UUID, LessonRow] = {}
        for start in range(0, len(keys), _MAX_VARIABLES):
            chunk = keys[start : start + _MAX_VARIABLES]
            cursor.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {table} "
                f"WHERE lesson_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for record in cursor.fetchall():
                row = _decode(record)
                found[row.lesson_id] = row
        return found

    def _insert_rows(self, cursor: SQLiteCursor, table: str, rows: Sequence[LessonRow]) -> None:
        statement = (
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        try:
            cursor.executemany(statement, [_encode(row) for row in rows])
        except sqlite3.IntegrityError as error:
            raise SafetyNetFired(f"the {table} table refused a row: {error}") from error

    def _upsert_rows(self, cursor: SQLiteCursor, table: str, rows: Sequence[LessonRow]) -> None:
        updates = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
        statement = (
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT (lesson_id) DO UPDATE SET {updates} "
            f"WHERE {table}.version < excluded.version"
        )
        try:
            cursor.executemany(statement, [_encode(row) for row in rows])
        except sqlite3.IntegrityError as error:
            raise SafetyNetFired(f"the {table} table refused a row: {error}") from error
        written = cursor.sqlite_cursor.rowcount  # the library's wrapper does not pass it on
        if written != len(rows):
            raise SafetyNetFired(not_forward(table, len(rows) - written))

    def _table_exists(self, cursor: SQLiteCursor, table: str) -> bool:
        cursor.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,))
        return cursor.fetchone() is not None

    def _create_lessons_table(self, cursor: SQLiteCursor, table: str) -> None:
        cursor.execute(_create_table_sql(table))

    def _drop_table(self, cursor: SQLiteCursor, table: str) -> None:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def _replace_live_with_shadow(self, cursor: SQLiteCursor) -> None:
        cursor.execute(f"DROP TABLE {LIVE.table}")  # its indexes go with it
        cursor.execute(f"ALTER TABLE lessons_shadow RENAME TO {LIVE.table}")
        for statement in _create_indexes_sql(LIVE.table):
            cursor.execute(statement)

    def _record_rebuild(self, cursor: SQLiteCursor, started_at: datetime) -> None:
        cursor.execute(
            f"INSERT OR REPLACE INTO {_REBUILDS_TABLE} (projection, started_at) VALUES (?, ?)",
            (LIVE.table, started_at.isoformat()),
        )

    def _forget_rebuild(self, cursor: SQLiteCursor) -> None:
        cursor.execute(f"DELETE FROM {_REBUILDS_TABLE} WHERE projection = ?", (LIVE.table,))

    def rebuild_started_at(self) -> datetime | None:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT started_at FROM {_REBUILDS_TABLE} WHERE projection = ?", (LIVE.table,)
            )
            row = cursor.fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    # Queries.

    def get_row(self, lesson_id: UUID) -> LessonRow | None:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {LIVE.table} WHERE lesson_id = ?",
                (str(lesson_id),),
            )
            record = cursor.fetchone()
        return None if record is None else _decode(record)

    def list_rows(self, query: LessonQuery) -> list[LessonRow]:
        conditions: list[str] = []
        params: list[Any] = []
        for column, operator, value in (
            ("provider_id", "=", query.provider_id),
            ("school_id", "=", query.school_id),
            ("lesson_date", ">=", query.date_from),
            ("lesson_date", "<=", query.date_to),
            ("status", "=", query.status),
        ):
            if value is not None:
                conditions.append(f"{column} {operator} ?")
                params.append(value.isoformat() if isinstance(value, date) else value)
        if query.after is not None:
            day, slot, lesson_id = query.after
            conditions.append("(lesson_date, time_slot, lesson_id) > (?, ?, ?)")
            params += [day.isoformat(), slot, str(lesson_id)]
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {LIVE.table} {where}"
                "ORDER BY lesson_date, time_slot, lesson_id LIMIT ?",
                [*params, query.limit],
            )
            return [_decode(record) for record in cursor.fetchall()]

    def count_events_after(self, position: int) -> int:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT count(*) FROM {self.events_table} WHERE rowid > ?", (position,))
            return int(cursor.fetchone()[0])

    @contextmanager
    def verification_snapshot(self) -> Iterator[VerificationSnapshot]:
        # One read transaction: in WAL mode its first read fixes the snapshot that every
        # later statement of the transaction sees, the table's and the log's alike.
        with self.datastore.get_connection(commit=False) as conn:
            position_cursor, events_cursor, rows_cursor = (
                conn.cursor().sqlite_cursor for _ in range(3)
            )
            try:
                position_cursor.execute("BEGIN")
                position_cursor.execute(
                    "SELECT notification_id FROM tracking WHERE application_name = ?",
                    (LIVE.tracking_name,),
                )
                found = position_cursor.fetchone()
                position = int(found[0]) if found else 0
                events_cursor.execute(
                    "SELECT originator_id, originator_version, topic, state "
                    f"FROM {self.events_table} WHERE rowid <= ? "
                    "ORDER BY originator_id, originator_version",
                    (position,),
                )
                rows_cursor.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM {LIVE.table} ORDER BY lesson_id"
                )
                yield VerificationSnapshot(
                    position=position,
                    events=(StoredEvent(UUID(r[0]), r[1], r[2], r[3]) for r in events_cursor),
                    rows=(_decode(record) for record in rows_cursor),
                )
            finally:
                for cursor in (events_cursor, rows_cursor, position_cursor):
                    cursor.close()
                conn.rollback()

    # Runners.

    def runner_lock(self, target: Target) -> RunnerLock:
        if self.database.path == ":memory:":
            return ProcessLock(f"memory.{target.tracking_name}")
        return FileLock(f"{self.database.path}.{target.tracking_name}.lock", target.tracking_name)

    def wakeup(self) -> Wakeup:
        return PollingWakeup(self.poll_interval)

    def close(self) -> None:
        self.datastore.close()


def _encode(row: LessonRow) -> tuple[Any, ...]:
    return (
        str(row.lesson_id),
        row.provider_id,
        row.school_id,
        row.lesson_date.isoformat(),
        row.time_slot,
        row.status,
        row.attempt,
        row.request_id,
        row.requested_by,
        _time(row.requested_at),
        None
        if row.content is None
        else json.dumps(row.content, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        row.model,
        _time(row.generated_at),
        row.failure_reason,
        row.version,
        row.updated_at.isoformat(),
    )


def _decode(record: Sequence[Any]) -> LessonRow:
    (
        lesson_id,
        provider_id,
        school_id,
        lesson_date,
        time_slot,
        status,
        attempt,
        request_id,
        requested_by,
        requested_at,
        content,
        model,
        generated_at,
        failure_reason,
        version,
        updated_at,
    ) = record
    return LessonRow(
        lesson_id=UUID(lesson_id),
        provider_id=provider_id,
        school_id=school_id,
        lesson_date=date.fromisoformat(lesson_date),
        time_slot=time_slot,
        status=status,
        attempt=attempt,
        request_id=request_id,
        requested_by=requested_by,
        requested_at=_parse_time(requested_at),
        content=None if content is None else json.loads(content),
        model=model,
        generated_at=_parse_time(generated_at),
        failure_reason=failure_reason,
        version=version,
        updated_at=datetime.fromisoformat(updated_at),
    )


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
