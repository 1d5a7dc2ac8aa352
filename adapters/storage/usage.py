"""Tokens spent on generation, in the ledger's database (SQLite or PostgreSQL): per
provider and UTC day for the daily cap (`generation_usage`), and per model for /metrics
(`generation_token_totals`). The rules are in projections/generation/budget.py.

A reservation is one statement (an upsert whose update applies only under the cap), so
it is atomic across processes on PostgreSQL and across threads on SQLite.
"""

from __future__ import annotations

from datetime import date

from adapters.storage.sqlstore import SqlStore
from projections.generation.budget import Reservation
from projections.generation.port import TokenUsage

_USAGE = "generation_usage"
_TOTALS = "generation_token_totals"


class SqlUsageStore:
    """The usage tables on the store's database (created on first use)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._usage = store.table(_USAGE)
        self._totals = store.table(_TOTALS)
        store.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self._usage} ("
            "provider_id TEXT NOT NULL, day TEXT NOT NULL, "
            "prompt_tokens BIGINT NOT NULL DEFAULT 0, "
            "completion_tokens BIGINT NOT NULL DEFAULT 0, "
            "reserved_tokens BIGINT NOT NULL DEFAULT 0, "
            "attempts BIGINT NOT NULL DEFAULT 0, "
            "PRIMARY KEY (provider_id, day))",
            f"CREATE TABLE IF NOT EXISTS {self._totals} ("
            "model TEXT PRIMARY KEY, prompt_tokens BIGINT NOT NULL DEFAULT 0, "
            "completion_tokens BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0)",
        )

    def reserve(self, provider_id: str, day: date, tokens: int, cap: int | None) -> bool:
        if cap is None:
            return True
        rows = self.store.run(
            f"INSERT INTO {self._usage} AS u (provider_id, day, reserved_tokens) "
            "VALUES (%s, %s, %s) ON CONFLICT (provider_id, day) DO UPDATE "
            "SET reserved_tokens = u.reserved_tokens + excluded.reserved_tokens "
            "WHERE u.prompt_tokens + u.completion_tokens + u.reserved_tokens < %s "
            "RETURNING 1",
            (provider_id, day.isoformat(), tokens, cap),
        )
        return bool(rows)

    def settle(self, reservation: Reservation, usage: TokenUsage, model: str) -> None:
        # An upsert: without a cap nothing was reserved, and the row may be new.
        by_day = (
            f"INSERT INTO {self._usage} AS u (provider_id, day, reserved_tokens, "
            "prompt_tokens, completion_tokens, attempts) VALUES (%s, %s, 0, %s, %s, 1) "
            "ON CONFLICT (provider_id, day) DO UPDATE SET "
            "reserved_tokens = MAX_OF(u.reserved_tokens - %s, 0), "
            "prompt_tokens = u.prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = u.completion_tokens + excluded.completion_tokens, "
            "attempts = u.attempts + 1"
        )
        by_model = (
            f"INSERT INTO {self._totals} AS t (model, prompt_tokens, completion_tokens, "
            "attempts) VALUES (%s, %s, %s, 1) ON CONFLICT (model) DO UPDATE SET "
            "prompt_tokens = t.prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = t.completion_tokens + excluded.completion_tokens, "
            "attempts = t.attempts + 1"
        )
        day = (
            reservation.provider_id,
            reservation.day.isoformat(),
            usage.prompt_tokens,
            usage.completion_tokens,
            reservation.tokens,
        )
        totals = (model, usage.prompt_tokens, usage.completion_tokens)
        if self.store.database.kind == "postgresql":
            # One statement, one round trip: every attempt settles.
            self.store.run(
                f"WITH d AS ({by_day.replace('MAX_OF', 'greatest')}) {by_model}", (*day, *totals)
            )
            return
        with self.store.transaction() as cursor:
            cursor.run(by_day.replace("MAX_OF", "max"), day)
            cursor.run(by_model, totals)

    def totals(self) -> list[tuple[str, int, int, int]]:
        """(model, prompt tokens, completion tokens, attempts), by model."""
        rows = self.store.run(
            f"SELECT model, prompt_tokens, completion_tokens, attempts FROM {self._totals} "
            "ORDER BY model"
        )
        return [(str(m), int(p), int(c), int(a)) for m, p, c, a in rows]

    def used(self, provider_id: str, day: date) -> tuple[int, int]:
        """(tokens used, tokens held) by the provider on the day."""
        rows = self.store.run(
            f"SELECT prompt_tokens + completion_tokens, reserved_tokens FROM {self._usage} "
            "WHERE provider_id = %s AND day = %s",
            (provider_id, day.isoformat()),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
