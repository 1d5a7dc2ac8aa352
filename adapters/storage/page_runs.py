"""Work started from a page (a verify of the read model, or of the log's tree), kept in
the ledger's database so that every server process shows it, whichever one runs it: when
it started, how far it got, and what it found (as JSON) or why it failed.

One run of a name at a time, across processes. The process running it beats every
`BEAT_SECONDS`; a run whose beat has stopped for `STALE_SECONDS` (its process ended) is
shown as interrupted, and may be started again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.storage.sqlstore import SqlStore

BEAT_SECONDS = 1.0
STALE_SECONDS = 10.0
_COLUMNS = "run_id, started_at, total, done_count, beat_at, finished_at, result, error"


@dataclass(frozen=True)
class PageRun:
    """One run as stored: its progress, then its result (JSON) or its error."""

    name: str
    run_id: str
    started_at: datetime
    total: int
    """How much there is to do (0: not known, no fraction shown)."""
    done_count: int
    beat_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None

    @property
    def interrupted(self) -> bool:
        """Unfinished, and its process no longer beats (it ended)."""
        stale = datetime.now(UTC) - self.beat_at > timedelta(seconds=STALE_SECONDS)
        return self.finished_at is None and stale

    @property
    def running(self) -> bool:
        return self.finished_at is None and not self.interrupted

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_count / self.total) if self.total else 0.0


class PageRuns:
    """The latest run of each name, in the ledger's database."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql
        self.table = sql.table("page_runs")
        self._postgres = sql.database.kind == "postgresql"
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " name TEXT PRIMARY KEY, run_id TEXT NOT NULL, started_at TEXT NOT NULL,"
            " total BIGINT NOT NULL, done_count BIGINT NOT NULL, beat_at TEXT NOT NULL,"
            " finished_at TEXT, result TEXT, error TEXT)"
        )

    def start(self, name: str, total: int) -> str | None:
        """A new run of `name` (its id), replacing the one before; None while another
        is running, here or in another process."""
        with self.sql.transaction() as cursor:
            if self._postgres:  # SQLite's write lock (BEGIN IMMEDIATE) does this there
                cursor.run("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            rows = cursor.run(f"SELECT {_COLUMNS} FROM {self.table} WHERE name = %s", (name,))
            if rows and _run(name, rows[0]).running:
                return None
            run_id, now = uuid.uuid4().hex, _now()
            cursor.run(f"DELETE FROM {self.table} WHERE name = %s", (name,))
            cursor.run(
                f"INSERT INTO {self.table} (name, {_COLUMNS})"
                " VALUES (%s, %s, %s, %s, 0, %s, NULL, NULL, NULL)",
                (name, run_id, now, total, now),
            )
        return run_id

    def beat(self, name: str, run_id: str, done_count: int) -> None:
        """The run goes on, this far."""
        self.sql.run(
            f"UPDATE {self.table} SET done_count = %s, beat_at = %s"
            " WHERE name = %s AND run_id = %s AND finished_at IS NULL",
            (done_count, _now(), name, run_id),
        )

    def finish(
        self,
        name: str,
        run_id: str,
        done_count: int,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """The run's end: how far it got, and what it found or why it failed."""
        found = None if result is None else json.dumps(result, default=str)
        now = _now()
        self.sql.run(
            f"UPDATE {self.table} SET done_count = %s, finished_at = %s, beat_at = %s,"
            " result = %s, error = %s WHERE name = %s AND run_id = %s",
            (done_count, now, now, found, error, name, run_id),
        )

    def latest(self, name: str) -> PageRun | None:
        rows = self.sql.run(f"SELECT {_COLUMNS} FROM {self.table} WHERE name = %s", (name,))
        return _run(name, rows[0]) if rows else None


def _run(name: str, row: tuple[Any, ...]) -> PageRun:
    run_id, started_at, total, done_count, beat_at, finished_at, result, error = row
    return PageRun(
        name,
        str(run_id),
        datetime.fromisoformat(str(started_at)),
        int(total),
        int(done_count),
        datetime.fromisoformat(str(beat_at)),
        None if finished_at is None else datetime.fromisoformat(str(finished_at)),
        None if result is None else json.loads(str(result)),
        None if error is None else str(error),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
