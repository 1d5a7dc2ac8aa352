"""Where a benchmark run writes: a fresh PostgreSQL schema (dropped afterwards) or a
fresh SQLite file, holding both the ledger's tables and the baseline's racing table.

`StoreSpec` is plain data, so worker processes can open the same store; the baseline's
client is a `BaselineWriter` with one connection, written as fast as a client can:
autocommit, one prepared INSERT per row (or one transaction of many rows for batches).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from benchmarks.workload import Request

DEFAULT_POSTGRES_URL = os.environ.get(
    "LESSON_LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BASELINE_TABLE = "ai_generated_lessons"
_COLUMNS = "provider_id, school_id, lesson_date, time_slot, session_data"


@dataclass(frozen=True)
class StoreSpec:
    """How to reach a run's store: the ledger's URL and the baseline's connection."""

    kind: str  # "postgresql" or "sqlite"
    ledger_url: str
    server_url: str = ""  # PostgreSQL: the database, without the schema option
    schema: str = ""
    sqlite_path: str = ""

    @property
    def baseline_table(self) -> str:
        return f'"{self.schema}".{BASELINE_TABLE}' if self.kind == "postgresql" else BASELINE_TABLE


class BaselineWriter:
    """One client of the old table: plain INSERTs, each its own transaction."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self._insert = f"INSERT INTO {spec.baseline_table} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
        if spec.kind == "postgresql":
            self._pg = psycopg.connect(spec.server_url, autocommit=True)
        else:
            self._sqlite = sqlite3.connect(
                spec.sqlite_path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._insert = self._insert.replace("%s", "?")

    def insert(self, request: Request) -> bool:
        """Insert one row; False when the unique constraint refused it (a lost race)."""
        try:
            if self.spec.kind == "postgresql":
                self._pg.execute(self._insert, request.as_row(), prepare=True)
            else:
                self._sqlite.execute(self._insert, request.as_row())
        except (psycopg.errors.UniqueViolation, sqlite3.IntegrityError):
            return False
        return True

    def insert_many(self, batch: Sequence[Request]) -> None:
        """Insert rows in one transaction (psycopg pipelines the statements)."""
        rows = [request.as_row() for request in batch]
        if self.spec.kind == "postgresql":
            with self._pg.transaction(), self._pg.cursor() as cursor:
                cursor.executemany(self._insert, rows)
        else:
            self._sqlite.execute("BEGIN")
            self._sqlite.executemany(self._insert, rows)
            self._sqlite.execute("COMMIT")

    def close(self) -> None:
        if self.spec.kind == "postgresql":
            self._pg.close()
        else:
            self._sqlite.close()


CREATED_SCHEMAS: list[str] = []
"""Every schema this run made (the smoke test checks that each was dropped)."""


def create_store(kind: str, database_url: str | None) -> StoreSpec:
    """A fresh schema (PostgreSQL) or file (SQLite) with the baseline's table in it; the
    ledger creates its own tables when first opened."""
    if kind == "postgresql":
        parts = urlsplit(database_url or DEFAULT_POSTGRES_URL)
        server_url = urlunsplit(parts._replace(query=""))
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            CREATED_SCHEMAS.append(schema)
            conn.execute(
                f"""CREATE TABLE "{schema}".{BASELINE_TABLE} (
                    id bigserial PRIMARY KEY, provider_id uuid NOT NULL, school_id text,
                    lesson_date date NOT NULL, time_slot text NOT NULL, content jsonb,
                    prompt text, session_data jsonb, created_at timestamptz DEFAULT now(),
                    updated_at timestamptz,
                    CONSTRAINT {BASELINE_TABLE}_unique_lesson
                        UNIQUE (provider_id, school_id, lesson_date, time_slot))"""
            )
        return StoreSpec(
            kind, f"{server_url}?schema={schema}", server_url=server_url, schema=schema
        )
    folder = Path(database_url) if database_url else Path(tempfile.mkdtemp(prefix="bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = str((folder / f"bench-{uuid.uuid4().hex[:8]}.db").resolve())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"""CREATE TABLE {BASELINE_TABLE} (
                id INTEGER PRIMARY KEY, provider_id TEXT NOT NULL, school_id TEXT,
                lesson_date TEXT NOT NULL, time_slot TEXT NOT NULL, content TEXT, prompt TEXT,
                session_data TEXT, created_at TEXT DEFAULT CURRENT_TIMESTAMP, updated_at TEXT,
                CONSTRAINT {BASELINE_TABLE}_unique_lesson
                    UNIQUE (provider_id, school_id, lesson_date, time_slot))"""
        )
    return StoreSpec(kind, f"sqlite:///{path}", sqlite_path=path)  # path is absolute


def drop_store(spec: StoreSpec) -> None:
    """Drop the run's schema, or delete its SQLite files."""
    if spec.kind == "postgresql":
        with psycopg.connect(spec.server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{spec.schema}" CASCADE')
        return
    folder = Path(spec.sqlite_path).parent
    for path in folder.glob(Path(spec.sqlite_path).name + "*"):
        path.unlink(missing_ok=True)
    if folder.name.startswith("bench-") and not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def count_rows(spec: StoreSpec, table: str) -> int:
    """Rows of one of the run's tables (`events` is the ledger's events table)."""
    if spec.kind == "postgresql":
        name = f'"{spec.schema}".lessonledger_events' if table == "events" else table
        with psycopg.connect(spec.server_url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
        return int(row[0]) if row else 0
    name = "stored_events" if table == "events" else table
    with sqlite3.connect(spec.sqlite_path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
