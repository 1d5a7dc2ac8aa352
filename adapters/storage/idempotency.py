"""Idempotency-Key: the first response to a key is kept, and a repeat with the same
body gets it back without anything being written again. What is kept is the id derived
from the key and a keyed hash of the body (adapters/keys/keyed_ids.py), never the key or
the body as sent; rows of an earlier release, under keys as sent, are never matched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.storage.sqlstore import SqlStore


@dataclass(frozen=True)
class StoredResponse:
    """The first response given to an idempotency key, and the body it answered."""

    body_hash: str
    status: int
    body: dict[str, Any]


class IdempotencyStore:
    """First responses by (scope, key); the scope keeps one client's keys from another's."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql
        self.table = sql.table("idempotency_keys")
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " scope TEXT NOT NULL, key TEXT NOT NULL, body_hash TEXT NOT NULL,"
            " status INTEGER NOT NULL, response TEXT NOT NULL, created_at TEXT NOT NULL,"
            " PRIMARY KEY (scope, key))"
        )

    def find(self, scope: str, key: str) -> StoredResponse | None:
        rows = self.sql.run(
            f"SELECT body_hash, status, response FROM {self.table} WHERE scope = %s AND key = %s",
            (scope, key),
        )
        if not rows:
            return None
        body_hash, status, response = rows[0]
        return StoredResponse(body_hash, int(status), json.loads(response))

    def remember(self, scope: str, key: str, stored: StoredResponse) -> StoredResponse:
        """Keep this response unless another request with the key got there first; the
        response that was kept is returned, so racing repeats all answer the same."""
        self.sql.run(
            f"INSERT INTO {self.table} (scope, key, body_hash, status, response, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING",
            (
                scope,
                key,
                stored.body_hash,
                stored.status,
                json.dumps(stored.body),
                datetime.now(UTC).isoformat(),
            ),
        )
        kept = self.find(scope, key)
        assert kept is not None
        return kept
