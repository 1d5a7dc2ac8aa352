"""The databases tests run on: a SQLite file, or a schema of its own on the local
PostgreSQL (LESSON_LEDGER_TEST_POSTGRES_URL; default the local server's `test`
database). Where PostgreSQL cannot be reached its tests are skipped, and the summary
says so; under CI=true an unreachable PostgreSQL fails the run instead."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.eventstore import open_ledger
from adapters.storage.database import Database
from domain import LessonLedger

POSTGRES_URL = os.environ.get(
    "LESSON_LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {str(error).strip()[:200]}"
    return None


POSTGRES_PROBLEM = _postgres_problem()


def require_postgres() -> None:
    if POSTGRES_PROBLEM is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {POSTGRES_PROBLEM}", pytrace=False)
    pytest.skip(POSTGRES_PROBLEM)


class Store:
    """A database for one test: its URL, and helpers to open ledgers on it."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.database = Database.from_url(url)
        self._opened: list[LessonLedger] = []

    def open(self) -> LessonLedger:
        ledger = open_ledger(self.url)
        self._opened.append(ledger)
        return ledger

    def count_events(self) -> int:
        return int(self.query(f"SELECT count(*) FROM {self.database.events_table}")[0][0])

    def query(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the database directly, as an operator would."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.database.path) as conn:
                return list(conn.execute(statement, params).fetchall())
        with self.database.connect() as conn:
            return list(conn.execute(statement, params).fetchall())

    def execute(self, statement: str, params: tuple[object, ...] = ()) -> None:
        """Write to the database directly (`%s` placeholders on either store)."""
        if self.kind == "sqlite":
            self.query(statement.replace("%s", "?"), params)
            return
        with self.database.connect() as conn:
            conn.execute(statement, params)

    def all_text(self) -> str:
        """Everything the database holds, every table and row, as text (stored bytes such
        as events decoded as UTF-8): what someone with a copy of it could read."""
        if self.kind == "sqlite":
            found = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
            qualified = [f'"{row[0]}"' for row in found]
        else:
            schema = self.database.schema
            found = self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
            qualified = [f'"{schema}"."{row[0]}"' for row in found]
        parts = []
        for table in qualified:
            for row in self.query(f"SELECT * FROM {table}"):
                parts += [
                    bytes(value).decode("utf-8", "replace")
                    if isinstance(value, bytes | memoryview)
                    else str(value)
                    for value in row
                ]
        return "\n".join(parts)

    def count_transactions(self) -> int:
        """How many PostgreSQL transactions wrote the stored events (distinct xmin)."""
        table = self.database.events_table
        return int(self.query(f"SELECT count(DISTINCT xmin::text) FROM {table}")[0][0])

    def close(self) -> None:
        for ledger in self._opened:
            ledger.close()


def sqlite_store(folder: Path) -> Iterator[Store]:
    """A store in a new SQLite file in `folder`."""
    store = Store("sqlite", f"sqlite:///{folder / 'ledger.db'}")
    try:
        yield store
    finally:
        store.close()


def postgres_store() -> Iterator[Store]:
    """A store in a fresh schema of the local PostgreSQL, dropped afterwards."""
    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    store = Store("postgresql", f"{POSTGRES_URL}?schema={schema}")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
