"""Runner locks on PostgreSQL: one active runner per table (or worker), across processes.

A session advisory lock, held on a connection of its own for as long as the runner runs;
the server releases it when the session ends, so a runner killed with SIGKILL frees it
at once. A runner that waits takes over as soon as it is free.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from adapters.storage.database import Database
from domain.errors import LedgerUnavailable
from projections.view import RunnerLock

_LOCK_NAMESPACE = 0x4C4C  # "LL": first key of every lesson-ledger runner lock


_HELD_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid::text::bigint = %s AND objid::text::bigint = %s AND objsubid = 2 AND granted)"
)


class LockLost(LedgerUnavailable):
    """A runner's lock went away with its database session."""


class AdvisoryLock(RunnerLock):
    """A PostgreSQL session advisory lock named by the schema and the table's tracking name.

    The key includes the schema: advisory locks are database-wide, and each schema holds
    a ledger of its own.
    """

    def __init__(
        self,
        database: Database,
        name: str,
        *,
        queries: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] | None = None,
    ) -> None:
        """`queries`: where `is_taken` may borrow a connection (e.g. a pool's); by default
        it opens one of its own."""
        self._database = database
        self.name = name
        self._queries = queries
        self._keys = (
            _LOCK_NAMESPACE,
            zlib.crc32(f"{database.schema}.{name}".encode()) & 0x7FFF_FFFF,
        )
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self._conn is not None:
            return True
        conn = self._database.connect()
        try:
            if not wait:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", self._keys
                ).fetchone()
                if row and row[0]:
                    self._conn = conn
                    return True
                conn.close()
                return False
            # Block in the server, in slices, so that `stop` is noticed; the lock is
            # granted the moment its holder's session ends.
            conn.execute("SET lock_timeout = '500ms'")
            while True:
                try:
                    conn.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", self._keys)
                except psycopg.errors.LockNotAvailable:
                    if stop is not None and stop.is_set():
                        conn.close()
                        return False
                    continue
                self._conn = conn
                return True
        except BaseException:
            conn.close()
            raise

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Unlock explicitly: closing alone returns before the server has ended the
            # session, and a runner taking over right after would still find it locked.
            conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", self._keys)
        except psycopg.Error:
            pass  # a broken session: the server releases the lock as it ends it
        finally:
            conn.close()

    def check(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as error:
            self.release()
            raise LockLost(f"the runner lock for {self.name} was lost: {error}") from None

    def is_taken(self) -> bool:
        with (self._queries or self._database.connect)() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            row = cursor.execute(_HELD_SQL, self._keys).fetchone()
        return bool(row and row[0])
