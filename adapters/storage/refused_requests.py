"""The table of refused requests (`invalid_requests`): who sent what, and why it was
refused, for `lesson-ledger report conflicts`. Opened on first use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from domain.errors import FieldError
from domain.invalid_requests import InvalidRequest

COLUMNS = "recorded_at, request_id, actor, correlation_id, source, as_sent, errors, cause"


class SqlInvalidRequestLog:
    """Keeps refused requests in the ledger's database, beside the events."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._sql: SqlStore | None = None

    @property
    def sql(self) -> SqlStore:
        if self._sql is None:
            self._sql = SqlStore(self.database, pool_size=2)
            self.table = self._sql.table("invalid_requests")
            self._sql.create_tables(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " recorded_at TEXT NOT NULL, request_id TEXT, actor TEXT, correlation_id TEXT,"
                " source TEXT, as_sent TEXT NOT NULL, errors TEXT NOT NULL, cause TEXT NOT NULL)"
            )
        return self._sql

    def record(self, refused: InvalidRequest) -> None:
        sql = self.sql
        sql.run(
            f"INSERT INTO {self.table} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                refused.recorded_at.isoformat(),
                refused.request_id,
                refused.actor,
                refused.correlation_id,
                refused.source,
                json.dumps(refused.as_sent),
                json.dumps(refused.errors),
                refused.cause,
            ),
        )

    def read(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[InvalidRequest]:
        """Refused requests recorded in [since, until], oldest first."""
        sql = self.sql
        rows = sql.run(
            f"SELECT {COLUMNS} FROM {self.table} WHERE recorded_at >= %s AND recorded_at <= %s"
            " ORDER BY recorded_at",
            (since.isoformat() if since else "", until.isoformat() if until else "9999"),
        )
        for recorded_at, request_id, actor, correlation_id, source, as_sent, errors, _ in rows:
            yield InvalidRequest(
                recorded_at=datetime.fromisoformat(recorded_at),
                request_id=request_id,
                actor=actor,
                correlation_id=correlation_id,
                source=source,
                as_sent=json.loads(as_sent),
                errors=[
                    FieldError(field=e["field"], message=e["message"]) for e in json.loads(errors)
                ],
            )

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()
            self._sql = None
