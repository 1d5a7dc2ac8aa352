"""Runner locks for the read model's tables: one active runner per table, across processes.

PostgreSQL: a session advisory lock, held on a connection of its own for as long as the
runner runs; the server releases it when the session ends, so a runner killed with
SIGKILL frees it at once. SQLite: `flock` on a file next to the database; the kernel
drops it when the process dies. A runner that waits takes over as soon as it is free.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import psycopg
from psycopg.rows import tuple_row

from adapters.database import Database
from domain.errors import LedgerUnavailable
from projections.view import RunnerLock

_LOCK_NAMESPACE = 0x4C4C  # "LL": first key of every lesson-ledger runner lock
_RETRY_SECONDS = 0.05


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


class FileLock(RunnerLock):
    """An exclusive `flock` on `<database file>.<name>.lock`."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait or (stop is not None and stop.is_set()):
                    os.close(fd)
                    return False
                # flock has no timeout: poll, briefly, so that `stop` is noticed.
                if stop is not None:
                    stop.wait(_RETRY_SECONDS)
                else:
                    time.sleep(_RETRY_SECONDS)
                continue
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def is_taken(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class ProcessLock(RunnerLock):
    """For an in-memory SQLite database, which only one process can see anyway."""

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        with self._registry_lock:
            self._lock = self._locks.setdefault(name, threading.Lock())
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self._held:
            return True
        while not self._lock.acquire(timeout=_RETRY_SECONDS if wait else 0):
            if not wait or (stop is not None and stop.is_set()):
                return False
        self._held = True
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def is_taken(self) -> bool:
        return self._lock.locked()
