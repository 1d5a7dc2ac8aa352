"""The recorder's reads: only "settled" rows (`tx` below the oldest running transaction),
in notification-id order, and waiting for committed rows an older transaction holds back.

Why readers are ordered by transaction id: the recorder's module docstring and
docs/decisions/0001-postgres-recorder-without-table-lock.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed

_SETTLE_FIRST_SLEEP = 0.0005
_SETTLE_MAX_SLEEP = 0.02


class SettledReads:
    """The settled reads of one events table, through the library's pool (statements
    prepared in its sessions)."""

    def __init__(self, datastore: PostgresDatastore, table_sql: Composed) -> None:
        self._datastore = datastore
        self._table_sql = table_sql
        xmin = SQL("(SELECT pg_snapshot_xmin(pg_current_snapshot()))")
        self._settled_sql = SQL("tx < {}").format(xmin)
        self._head_sql = SQL(
            "SELECT notification_id, {settled} AS settled FROM {table} "
            "ORDER BY notification_id DESC LIMIT 1"
        ).format(settled=self._settled_sql, table=table_sql)
        self._settled_head_sql = SQL(
            "SELECT notification_id FROM {table} WHERE {settled} "
            "ORDER BY notification_id DESC LIMIT 1"
        ).format(settled=self._settled_sql, table=table_sql)
        self._is_settled_sql = SQL(
            "SELECT {settled} AS settled FROM {table} WHERE notification_id = %s"
        ).format(settled=self._settled_sql, table=table_sql)
        self._select_sql: dict[tuple[bool, bool, bool, bool], bytes] = {}

    def select(
        self,
        start: int | None,
        limit: int,
        stop: int | None,
        topics: Sequence[str],
        inclusive_of_start: bool,
        timeout: float,
    ) -> tuple[list[Notification], bool]:
        """The settled notifications of the range, and whether committed ones were held
        back (an older transaction was still running when `timeout` ran out)."""
        key = (start is not None, inclusive_of_start, stop is not None, bool(topics))
        params: list[Any] = []
        if start is not None:
            params.append(start)
        if stop is not None:
            params.append(stop)
        if topics:
            params.append(list(topics))
        params.append(limit)
        # Tuples in binary: a page of 500 was a fifth of a catch-up's time as dicts.
        with (
            self._datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as cursor,
        ):
            statement = self._select_sql.get(key) or self._select_statement(key, conn)
            rows = cursor.execute(statement, params, prepare=True).fetchall()
            settled = _settled_prefix(rows)
            if len(settled) < len(rows) and self._wait_until_settled(conn, rows[-1][0], timeout):
                rows = cursor.execute(statement, params, prepare=True).fetchall()
                settled = _settled_prefix(rows)
        # Columns: notification_id, originator_id, originator_version, topic, state.
        notifications = [Notification(r[1], r[2], r[3], r[4], r[0]) for r in settled]
        return notifications, len(settled) < len(rows)

    def max_notification_id(self, timeout: float) -> int | None:
        """The highest settled notification id (None for an empty log)."""
        with self._datastore.get_connection() as conn:
            top = conn.execute(self._head_sql, prepare=True).fetchone()
            if top is None:
                return None
            if top["settled"]:
                return int(top["notification_id"])
            self._wait_until_settled(conn, top["notification_id"], timeout)
            row = conn.execute(self._settled_head_sql, prepare=True).fetchone()
        return None if row is None else int(row["notification_id"])

    def _select_statement(
        self, key: tuple[bool, bool, bool, bool], conn: psycopg.Connection[Any]
    ) -> bytes:
        has_start, inclusive, has_stop, has_topics = key
        conditions = []
        if has_start:
            conditions.append(SQL("notification_id >= %s" if inclusive else "notification_id > %s"))
        if has_stop:
            conditions.append(SQL("notification_id <= %s"))
        if has_topics:
            conditions.append(SQL("topic = ANY(%s)"))
        where = SQL(" WHERE ") + SQL(" AND ").join(conditions) if conditions else SQL("")
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state, "
            "{settled} AS settled FROM {table}{where} ORDER BY notification_id LIMIT %s"
        ).format(settled=self._settled_sql, table=self._table_sql, where=where)
        self._select_sql[key] = statement.as_bytes(conn)
        return self._select_sql[key]

    def _wait_until_settled(
        self, conn: psycopg.Connection[Any], notification_id: int, timeout: float
    ) -> bool:
        """Wait until the row (and so every row below it) is settled: True, or False
        when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        pause = _SETTLE_FIRST_SLEEP
        while True:
            row = conn.execute(self._is_settled_sql, (notification_id,), prepare=True).fetchone()
            if row is None or row["settled"]:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _SETTLE_MAX_SLEEP)


def _settled_prefix(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows before the first one not settled (its last column); tx never decreases
    along the ids, so the unsettled rows are the tail."""
    if not rows or rows[-1][-1]:
        return rows
    for index, row in enumerate(rows):
        if not row[-1]:
            return rows[:index]
    return rows
