"""Plain SQL on the ledger's database, for the adapters' own small tables (API tokens,
idempotency keys). Statements are written once with `%s` placeholders and run on SQLite
or PostgreSQL alike."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from adapters.storage.database import DDL_LOCK_KEY, Database
from domain.errors import LedgerUnavailable

Row = tuple[Any, ...]


class SqlStore:
    """Runs statements on the ledger's database; each call is one transaction."""

    def __init__(
        self, database: Database, pool_size: int = 4, *, session_options: str | None = None
    ) -> None:
        """`session_options`: PostgreSQL settings for its sessions (libpq `options`, e.g.
        "-c synchronous_commit=off")."""
        self.database = database
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        if database.kind == "postgresql":
            database.connect().close()  # one clear error now rather than a pool timeout later
            self._pool = ConnectionPool(
                conninfo="",
                kwargs={
                    "host": database.host,
                    "port": database.port,
                    "user": database.user,
                    "password": database.password,
                    "dbname": database.dbname,
                    # One statement is a transaction of its own (one round trip); a
                    # block of several opens one explicitly (`transaction()`).
                    "autocommit": True,
                    **({"options": session_options} if session_options else {}),
                },
                min_size=1,
                max_size=pool_size,
                open=True,
                timeout=10,
            )

    def table(self, name: str) -> str:
        """The table's name as statements must spell it (schema-qualified on PostgreSQL)."""
        return name if self.database.kind == "sqlite" else f'"{self.database.schema}".{name}'

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A connection in autocommit mode (a fresh one on SQLite, a pooled one on
        PostgreSQL); the database failing is LedgerUnavailable."""
        try:
            if self._pool is None:
                conn = sqlite3.connect(self.database.path, timeout=30, isolation_level=None)
                try:
                    yield conn
                finally:
                    conn.close()
            else:
                with self._pool.connection() as pg_conn:
                    yield pg_conn
        except (sqlite3.OperationalError, psycopg.OperationalError) as error:
            raise LedgerUnavailable(f"the ledger's database failed: {error}") from error

    @contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        with self._session() as conn:
            if self._pool is not None:
                with conn.transaction():
                    yield _Cursor(conn, sqlite=False)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Cursor(conn, sqlite=True)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """One statement, atomic on its own: no BEGIN and COMMIT around it (on SQLite, no
        write lock for a read), so a token check costs one round trip."""
        with self._session() as conn:
            return _Cursor(conn, sqlite=self._pool is None).run(statement, params)

    def create_tables(self, *statements: str) -> None:
        """Run CREATE ... IF NOT EXISTS statements, one process at a time on PostgreSQL
        (concurrent DDL there fails with "tuple concurrently updated")."""
        with self.transaction() as cursor:
            if self.database.kind == "postgresql":
                cursor.run("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
            for statement in statements:
                cursor.run(statement)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class _Cursor:
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
