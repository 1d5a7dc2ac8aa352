"""Plain SQL on the ledger's database, for the adapters' own small tables (API tokens,
idempotency keys). Statements are written once with `%s` placeholders and run on SQLite
or PostgreSQL alike."""

from __future__ import annotations

import os
import re
import select
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from adapters.forking import in_forked_children, left_to_the_parent
from adapters.storage.database import DDL_LOCK_SQL, Database
from domain.errors import LedgerUnavailable

Row = tuple[Any, ...]


class _SqliteSession(threading.local):
    """A thread's SQLite connection to one store's file, kept between statements: a fresh
    one reads the database's schema before its first statement (about 400 us, where a
    key look-up then takes 6; decision record 0063)."""

    conn: sqlite3.Connection | None = None
    pid = 0
    """The process that opened it: a forked child opens its own."""
    epoch = 0
    """The store's `close()` count when it was opened: after a close, a new one."""
    busy = False
    """A statement or a transaction of this thread is using it: another one, nested,
    takes a connection of its own (as it always did), never joins that transaction."""


class SqlStore:
    """Runs statements on the ledger's database; each call is one transaction."""

    def __init__(
        self, database: Database, pool_size: int = 4, *, session_options: str | None = None
    ) -> None:
        """`session_options`: PostgreSQL settings for its sessions (libpq `options`, e.g.
        "-c synchronous_commit=off")."""
        self.database = database
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        self._sqlite = _SqliteSession()
        self._epoch = 0
        self._pool_kwargs: dict[str, Any] = {}
        if database.kind == "postgresql":
            database.connect().close()  # one clear error now rather than a pool timeout later
            kwargs = database.connect_kwargs()  # the URL's libpq options too
            if session_options and not database.is_pooled():
                # Beside the URL's own; a pooler may refuse start-up options, so there the
                # sessions go without (they are tuning, never needed for correctness).
                kwargs["options"] = " ".join(filter(None, [kwargs.get("options"), session_options]))
            self._pool_kwargs = {
                **kwargs,
                "prepare_threshold": database.prepare_threshold(),
                # One statement is a transaction of its own (one round trip); a block
                # of several opens one explicitly (`transaction()`).
                "autocommit": True,
            }
            self._pool = self._new_pool(pool_size, opened=True)
        self._opens_in_child, self._opening = False, threading.Lock()
        in_forked_children(self._forget_parents)

    def _new_pool(self, size: int, *, opened: bool) -> ConnectionPool[psycopg.Connection[Row]]:
        return ConnectionPool(
            conninfo="",
            kwargs=self._pool_kwargs,
            min_size=1,
            max_size=size,
            open=opened,
            timeout=10,
        )

    def _forget_parents(self) -> None:
        """In a forked child: the parent's pooled sessions are the parent's (two processes
        on one session corrupt it, and the pool's threads stayed with the parent); the
        child opens a pool of its own when it first runs a statement."""
        if self._pool is None or self._pool.closed:
            return
        left_to_the_parent(self._pool)
        self._pool = self._new_pool(self._pool.max_size, opened=False)
        self._opens_in_child, self._opening = True, threading.Lock()

    def _pooled(self) -> ConnectionPool[psycopg.Connection[Row]]:
        """The pool, opened here in a forked child (not at the fork: most children never
        use it)."""
        assert self._pool is not None
        if self._opens_in_child:
            with self._opening:
                if self._opens_in_child:
                    self._pool.open()
                    self._opens_in_child = False
        return self._pool

    def table(self, name: str) -> str:
        """The table's name as statements must spell it (schema-qualified on PostgreSQL)."""
        return name if self.database.kind == "sqlite" else f'"{self.database.schema}".{name}'

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]:
        """A pooled PostgreSQL connection in autocommit mode, lent for a moment (e.g. to
        ask whether a runner's lock is taken)."""
        if self._pool is None:
            raise TypeError("only a PostgreSQL store lends connections")
        return self._pooled().connection()

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A connection in autocommit mode (a fresh one on SQLite, a pooled one on
        PostgreSQL); the database failing is LedgerUnavailable."""
        try:
            if self._pool is None:
                with self._sqlite_connection() as conn:
                    yield conn
            else:
                with self._open_connection() as pg_conn:
                    yield pg_conn
        except (sqlite3.OperationalError, psycopg.OperationalError) as error:
            raise LedgerUnavailable(f"the ledger's database failed: {error}") from error

    @contextmanager
    def _sqlite_connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened on first use (again after a fork, a close or
        a failure); a nested use gets a connection of its own for its duration."""
        session = self._sqlite
        if session.busy:
            nested = self._sqlite_connect()
            try:
                yield nested
            finally:
                nested.close()
            return
        if session.conn is None or session.pid != os.getpid() or session.epoch != self._epoch:
            if session.conn is not None and session.pid == os.getpid():
                session.conn.close()
            elif session.conn is not None:
                # The parent's, through a fork: never used, nor closed (SQLite's advice).
                left_to_the_parent(session.conn)
            session.conn, session.pid, session.epoch = None, os.getpid(), self._epoch
            session.conn = self._sqlite_connect()
        session.busy = True
        try:
            yield session.conn
        except BaseException:
            # Its state is not known (a transaction left open?): the next use opens anew.
            session.conn.close()
            session.conn = None
            raise
        finally:
            session.busy = False

    def _sqlite_connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.database.path, timeout=30, isolation_level=None)

    @contextmanager
    def _open_connection(self) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection the server has not closed: after a restart each pooled
        connection is found closed here and replaced, rather than failing a statement."""
        pool = self._pooled()
        for _ in range(pool.max_size):
            with pool.connection() as conn:
                if not _closed_by_server(conn):
                    yield conn
                    return
                conn.close()  # the pool makes a new one in its place
        with pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._session() as conn:
            if self._pool is not None:
                with conn.transaction():
                    yield Cursor(conn, sqlite=False)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Cursor(conn, sqlite=True)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """One statement, atomic on its own: no BEGIN and COMMIT around it (on SQLite, no
        write lock for a read), so a token check costs one round trip."""
        with self._session() as conn:
            return Cursor(conn, sqlite=self._pool is None).run(statement, params)

    def create_tables(self, *statements: str) -> None:
        """Run `CREATE TABLE IF NOT EXISTS <table> ...` statements (and the indexes,
        functions and rows that go with them), one process at a time
        on PostgreSQL (concurrent DDL there fails with "tuple concurrently updated"), and
        only when a table is missing: a role without the right to create tables opens
        them once they exist; with table creation off a missing one is an error."""
        if self.database.kind == "postgresql":
            # The tables decide: indexes, functions and first rows come with their tables.
            names = [name for name in map(_created_table, statements) if name is not None]
            rows = self.run(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL",
                (names,),
            )
            if not rows:
                return
            if not self.database.create_tables:
                missing = [str(row[0]).split(".", 1)[1] for row in rows]
                raise self.database.missing_tables_error(missing)
        with self.transaction() as cursor:
            if self.database.kind == "postgresql":
                cursor.run(DDL_LOCK_SQL, self.database.ddl_lock_keys)
                self._create_schema(cursor)
            for statement in statements:
                cursor.run(statement)

    def _create_schema(self, cursor: Cursor) -> None:
        """The schema, when missing (a command run before any server started, e.g.
        `tokens create`). Only then: CREATE SCHEMA IF NOT EXISTS asks for the right to
        create in the database even when the schema is there."""
        schema = self.database.schema
        if not cursor.run("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)):
            cursor.run(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    def close(self) -> None:
        """Close the pool (PostgreSQL), or this thread's connection; another thread's is
        replaced at its next use, and closed when that thread calls `leave_thread`, or
        else when the collector takes it (which a reference cycle may put off until the
        process ends, the WAL unmerged meanwhile)."""
        if self._pool is not None:
            self._pool.close()
        self._epoch += 1
        self.leave_thread()

    def leave_thread(self) -> None:
        """Close this thread's SQLite connection (a thread of the store's ending): left
        to the garbage collector, it could stay open past the store's close, and the WAL
        unmerged into the database file."""
        session = self._sqlite
        if session.conn is not None and session.pid == os.getpid() and not session.busy:
            session.conn.close()
            session.conn = None


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server has ended this idle connection (a restart, a terminated
    session). An idle connection is sent nothing until the server ends it, so anything
    to read means that: no round trip, a poll of its socket (about 1 us)."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


def _created_table(statement: str) -> str | None:
    """The (schema-qualified) table a `CREATE TABLE IF NOT EXISTS` statement makes; None
    for another statement (an index, a function, a first row)."""
    found = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\S+)", statement)
    return None if found is None else found.group(1)


class Cursor:
    """The statements of one transaction (`SqlStore.transaction`), run as `SqlStore.run`."""

    def __init__(self, conn: Any, *, sqlite: bool) -> None:
        self._conn = conn
        self._sqlite = sqlite

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        if self._sqlite:
            statement = statement.replace("%s", "?")
        cursor = self._conn.execute(statement, tuple(params))
        if cursor.description is None:
            return []
        return [tuple(row) for row in cursor.fetchall()]
