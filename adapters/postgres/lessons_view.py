"""The lessons read model on PostgreSQL: the library's PostgreSQL tracking recorder
(table `<schema>.lessons_tracking`) plus the `lessons` table, in the ledger's schema.

A page's transaction locks the table's tracking row first (SELECT ... FOR UPDATE) and a
swap takes the same row lock first, so the two serialise without deadlock. The swap
drops the live table and renames the shadow (with its constraints and indexes) in one
transaction; readers wait for it (milliseconds) and then read the new table, because
PostgreSQL looks a relation up again by name once the lock it waited for is granted.
The swap bounds its lock waits (`SWAP_LOCK_TIMEOUT`) so that a long reader makes it
retry instead of queueing every other reader behind it.

A follower waits for events with LISTEN on the channel the recorder NOTIFYs on after
commits, where the ledger has a session (the direct URL, or a URL that is not pooled);
through a transaction pooler alone it looks at the log every `poll_seconds` instead, and
its runner lock is a lease (adapters/postgres/leases.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from adapters.postgres.leases import runner_lock_for
from adapters.postgres.listen import ListenWakeup
from adapters.storage.database import Database
from projections.lessons import COLUMNS, LessonRow
from projections.view import (
    LIVE,
    SHADOW,
    LessonQuery,
    LessonsView,
    PollingWakeup,
    RunnerLock,
    SafetyNetFired,
    Target,
    VerificationSnapshot,
    Wakeup,
    not_forward,
)

TRACKING_TABLE = "lessons_tracking"
SWAP_LOCK_TIMEOUT = "2s"
REBUILDS_TABLE = "projection_rebuilds"
_SECONDARY_INDEXES = {
    "provider_week_idx": "(provider_id, lesson_date, time_slot, lesson_id)",
    "school_date_idx": "(school_id, lesson_date, time_slot, lesson_id)",
    "date_idx": "(lesson_date, time_slot, lesson_id)",
}
_CONSTRAINTS = ("pkey", "unique_lesson")
_COLUMN_TYPES = {
    "lesson_id": "uuid",
    "provider_id": "text",
    "school_id": "text",
    "lesson_date": "date",
    "time_slot": "text",
    "status": "text",
    "attempt": "integer",
    "request_id": "text",
    "requested_by": "text",
    "requested_at": "timestamptz",
    "content": "jsonb",
    "model": "text",
    "generated_at": "timestamptz",
    "failure_reason": "text",
    "version": "integer",
    "updated_at": "timestamptz",
}
if tuple(_COLUMN_TYPES) != COLUMNS:  # the unnest() upsert relies on the same order
    raise ImportError("lessons_view_postgres: _COLUMN_TYPES must list projections.lessons.COLUMNS")
_NOT_NULL = {
    "lesson_id",
    "provider_id",
    "school_id",
    "lesson_date",
    "time_slot",
    "status",
    "attempt",
    "version",
    "updated_at",
}
_VERIFY_FETCH = 500


class PostgresLessonsView(LessonsView, PostgresTrackingRecorder):
    """The `lessons` table, its shadow, and their positions in `lessons_tracking`."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        database: Database,
        events_table: str,
        channel: str,
        tracking_table_name: str = TRACKING_TABLE,
    ) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name)
        self.database = database
        self.events_table = events_table
        self.channel = channel
        self.sql_create_statements += [
            *_create_table_sql(self.datastore.schema, LIVE.table),
            *_create_indexes_sql(self.datastore.schema, LIVE.table),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} ("
                "projection text PRIMARY KEY, started_at timestamptz NOT NULL)"
            ).format(self._schema, sql.Identifier(REBUILDS_TABLE)),
        ]

    @property
    def _schema(self) -> sql.Identifier:
        return sql.Identifier(self.datastore.schema)

    def _table(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self._schema, sql.Identifier(table))

    def create_table(self) -> None:
        """The tracking table (the library's), the lessons table, and the live position.
        The caller serialises this across processes (concurrent DDL fails)."""
        super().create_table()
        self._start_live()

    def table_names(self) -> list[str]:
        """The tables `create_table` makes, in the ledger's schema."""
        return [self.tracking_table_name, LIVE.table, REBUILDS_TABLE]

    def ensure_live_position(self) -> None:
        """Store the live table's position (0, in this release's shape) if it has none."""
        self._start_live()

    # Positions.

    def _read_position(self, tracking_name: str) -> int | None:
        position: int | None = self.max_tracking_id(tracking_name)
        return position

    # Transactions and store primitives.

    @contextmanager
    def _write_transaction(
        self, *, swap: bool = False, flush: bool = True
    ) -> Iterator[psycopg.Cursor[DictRow]]:
        with self.datastore.transaction(commit=True) as cursor:
            if not flush:  # about 8% of a rebuild's time, in an A/B run
                cursor.execute("SET LOCAL synchronous_commit = off")
            if swap:
                cursor.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT))
                )
            yield cursor

    def _locked_position(self, cursor: psycopg.Cursor[DictRow], tracking_name: str) -> int | None:
        cursor.execute(
            sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s FOR UPDATE").format(
                self._table(self.tracking_table_name)
            ),
            (tracking_name,),
        )
        row = cursor.fetchone()
        return None if row is None else int(row["notification_id"])

    def _store_position(
        self, cursor: psycopg.Cursor[DictRow], tracking_name: str, position: int
    ) -> None:
        self._insert_tracking(cursor, Tracking(tracking_name, position))

    def _forget_position(self, cursor: psycopg.Cursor[DictRow], tracking_name: str) -> None:
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE application_name = %s").format(
                self._table(self.tracking_table_name)
            ),
            (tracking_name,),
        )

    def _select_rows(
        self, cursor: psycopg.Cursor[DictRow], table: str, ids: Iterable[UUID]
    ) -> dict[UUID, LessonRow]:
        cursor.execute(
            sql.SQL("SELECT {} FROM {} WHERE lesson_id = ANY(%s)").format(
                _columns(), self._table(table)
            ),
            (list(ids),),
        )
        return {row.lesson_id: row for row in map(_decode, cursor.fetchall())}

    def _insert_rows(
        self, cursor: psycopg.Cursor[DictRow], table: str, rows: Sequence[LessonRow]
    ) -> None:
        # COPY in binary: about half the upsert's time per row, server and client (a
        # lesson opened in the page has no row yet, so nothing to update).
        if not rows:
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self._table(table), _columns()
        )
        try:
            with cursor.copy(statement) as copy:
                copy.set_types(list(_COLUMN_TYPES.values()))
                for row in rows:
                    copy.write_row(_encode(row))
        except psycopg.errors.UniqueViolation as error:
            raise SafetyNetFired(f"the {table} table refused a row: {error}") from error

    def _upsert_rows(
        self, cursor: psycopg.Cursor[DictRow], table: str, rows: Sequence[LessonRow]
    ) -> None:
        # One statement with one array per column: a short text the server prepares
        # once. Not executemany(): it runs in pipeline mode, which was seen to hang
        # forever on payloads of a few MB.
        if not rows:
            return
        columns = [list(column) for column in zip(*(_encode(row) for row in rows), strict=True)]
        try:
            cursor.execute(self._upsert_statement(table), columns, prepare=True)
        except psycopg.errors.UniqueViolation as error:
            raise SafetyNetFired(f"the {table} table refused a row: {error}") from error
        if cursor.rowcount != len(rows):
            raise SafetyNetFired(not_forward(table, len(rows) - cursor.rowcount))

    def _upsert_statement(self, table: str) -> sql.Composed:
        return sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (lesson_id) DO UPDATE SET {updates} "
            "WHERE {table}.version < EXCLUDED.version"
        ).format(
            table=self._table(table),
            columns=_columns(),
            arrays=sql.SQL(", ").join(
                sql.SQL("%b::{}[]").format(sql.SQL(kind)) for kind in _COLUMN_TYPES.values()
            ),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in COLUMNS[1:]
            ),
        )

    def _table_exists(self, cursor: psycopg.Cursor[DictRow], table: str) -> bool:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS found",
            (f'"{self.datastore.schema}"."{table}"',),
        )
        row = cursor.fetchone()
        return bool(row and row["found"])

    def _create_lessons_table(self, cursor: psycopg.Cursor[DictRow], table: str) -> None:
        for statement in (
            *_create_table_sql(self.datastore.schema, table),
            *_create_indexes_sql(self.datastore.schema, table),
        ):
            cursor.execute(statement)

    def _drop_table(self, cursor: psycopg.Cursor[DictRow], table: str) -> None:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(table)))

    def _replace_live_with_shadow(self, cursor: psycopg.Cursor[DictRow]) -> None:
        cursor.execute(sql.SQL("DROP TABLE {}").format(self._table(LIVE.table)))
        cursor.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                self._table(SHADOW.table), sql.Identifier(LIVE.table)
            )
        )
        # Constraint and index names are unique per schema: the shadow's carried its
        # table's name; renaming a constraint renames its index too.
        for suffix in _CONSTRAINTS:
            cursor.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self._table(LIVE.table),
                    sql.Identifier(f"{SHADOW.table}_{suffix}"),
                    sql.Identifier(f"{LIVE.table}_{suffix}"),
                )
            )
        for suffix in _SECONDARY_INDEXES:
            cursor.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    self._table(f"{SHADOW.table}_{suffix}"),
                    sql.Identifier(f"{LIVE.table}_{suffix}"),
                )
            )

    def _record_rebuild(self, cursor: psycopg.Cursor[DictRow], started_at: datetime) -> None:
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (projection, started_at) VALUES (%s, %s) "
                "ON CONFLICT (projection) DO UPDATE SET started_at = EXCLUDED.started_at"
            ).format(self._table(REBUILDS_TABLE)),
            (LIVE.table, started_at),
        )

    def _forget_rebuild(self, cursor: psycopg.Cursor[DictRow]) -> None:
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE projection = %s").format(self._table(REBUILDS_TABLE)),
            (LIVE.table,),
        )

    def rebuild_started_at(self) -> datetime | None:
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT started_at FROM {} WHERE projection = %s").format(
                    self._table(REBUILDS_TABLE)
                ),
                (LIVE.table,),
            ).fetchone()
        return None if row is None else row["started_at"]

    # Queries.

    def get_row(self, lesson_id: UUID) -> LessonRow | None:
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE lesson_id = %s").format(
                    _columns(), self._table(LIVE.table)
                ),
                (lesson_id,),
            ).fetchone()
        return None if row is None else _decode(row)

    def list_rows(self, query: LessonQuery) -> list[LessonRow]:
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        for column, operator, value in (
            ("provider_id", "=", query.provider_id),
            ("school_id", "=", query.school_id),
            ("lesson_date", ">=", query.date_from),
            ("lesson_date", "<=", query.date_to),
            ("status", "=", query.status),
        ):
            if value is not None:
                conditions.append(sql.SQL("{} " + operator + " %s").format(sql.Identifier(column)))
                params.append(value)
        if query.after is not None:
            conditions.append(sql.SQL("(lesson_date, time_slot, lesson_id) > (%s, %s, %s)"))
            params += list(query.after)
        where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        with self.datastore.get_connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT {} FROM {} {} ORDER BY lesson_date, time_slot, lesson_id LIMIT %s"
                ).format(_columns(), self._table(LIVE.table), where),
                [*params, query.limit],
            ).fetchall()
        return [_decode(row) for row in rows]

    def count_events_after(self, position: int) -> int:
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {} WHERE notification_id > %s").format(
                    self._table(self.events_table)
                ),
                (position,),
            ).fetchone()
        return int(row["n"]) if row else 0

    @contextmanager
    def verification_snapshot(self) -> Iterator[VerificationSnapshot]:
        # One REPEATABLE READ transaction: the position, the table and the log as of one
        # snapshot; server-side cursors stream both, a few hundred rows at a time.
        conn: psycopg.Connection[Any] = self.database.connect(autocommit=False)
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            found = conn.execute(
                sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                    self._table(self.tracking_table_name)
                ),
                (LIVE.tracking_name,),
            ).fetchone()
            position = int(found[0]) if found else 0
            events = conn.cursor(name="verify_events")
            events.itersize = _VERIFY_FETCH
            events.execute(
                sql.SQL(
                    "SELECT originator_id, originator_version, topic, state FROM {} "
                    "WHERE notification_id <= %s ORDER BY originator_id, originator_version"
                ).format(self._table(self.events_table)),
                (position,),
            )
            rows = conn.cursor(name="verify_rows", row_factory=psycopg.rows.dict_row)
            rows.itersize = _VERIFY_FETCH
            rows.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY lesson_id").format(
                    _columns(), self._table(LIVE.table)
                )
            )
            yield VerificationSnapshot(
                position=position,
                events=(StoredEvent(r[0], r[1], r[2], bytes(r[3])) for r in events),
                rows=(_decode(row) for row in rows),
            )
        finally:
            conn.rollback()
            conn.close()

    # Runners.

    def runner_lock(self, target: Target) -> RunnerLock:
        return runner_lock_for(
            self.database, target.tracking_name, queries=self.datastore.get_connection
        )

    def wakeup(self) -> Wakeup:
        session = self.database.session
        if session is None:  # no session to LISTEN on: look at the log every poll_seconds
            return PollingWakeup(self.database.poll_seconds)
        return ListenWakeup(session, self.channel)

    def close(self) -> None:
        self.datastore.close()


def _columns() -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in COLUMNS)


def _create_table_sql(schema: str, table: str) -> list[sql.Composed]:
    name = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(column),
            sql.SQL(kind),
            sql.SQL(" NOT NULL" if column in _NOT_NULL else ""),
        )
        for column, kind in _COLUMN_TYPES.items()
    )
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {name} ({columns}, "
            "CONSTRAINT {pkey} PRIMARY KEY (lesson_id), "
            "CONSTRAINT {unique} UNIQUE (provider_id, school_id, lesson_date, time_slot))"
        ).format(
            name=name,
            columns=columns,
            pkey=sql.Identifier(f"{table}_pkey"),
            unique=sql.Identifier(f"{table}_unique_lesson"),
        )
    ]


def _create_indexes_sql(schema: str, table: str) -> list[sql.Composed]:
    return [
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} " + columns).format(
            sql.Identifier(f"{table}_{suffix}"), sql.Identifier(schema), sql.Identifier(table)
        )
        for suffix, columns in _SECONDARY_INDEXES.items()
    ]


def _encode(row: LessonRow) -> tuple[Any, ...]:
    return (
        row.lesson_id,
        row.provider_id,
        row.school_id,
        row.lesson_date,
        row.time_slot,
        row.status,
        row.attempt,
        row.request_id,
        row.requested_by,
        row.requested_at,
        None if row.content is None else Jsonb(row.content),
        row.model,
        row.generated_at,
        row.failure_reason,
        row.version,
        row.updated_at,
    )


def _decode(row: DictRow) -> LessonRow:
    values = {name: row[name] for name in COLUMNS}
    for name in ("requested_at", "generated_at", "updated_at"):
        if values[name] is not None:  # UTC, whatever the session's time zone
            values[name] = values[name].astimezone(UTC)
    return LessonRow(**values)
