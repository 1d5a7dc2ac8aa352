"""The model's limits shared by every worker process: the calls granted in the window, in
PostgreSQL (the rule is in adapters/generators/limits.py).

A permit is one call of `<schema>.generation_rate_acquire(...)`: it locks the limit's row
(`generation_rate_limit`, one per endpoint and model), so grants are decided one at a
time across all processes, on the database's clock; counts the calls and tokens granted
in the window (`generation_rate_calls`, whose older rows it deletes on the way); and
either records the call or answers how long to wait before anything can change. A 429's
Retry-After sets the row's `paused_until`, which holds every process's calls. One round
trip a call, on one connection per process, in the worker's event loop.

If the database does not answer, no permit is granted: the calls wait (and say so in
the log) rather than risk the account's quota.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import psycopg

from adapters.generators.limits import Limits, Permit
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from domain.errors import one_line

log = logging.getLogger("lesson_ledger.generator")

_RETRY_SECONDS = 1.0

_DDL = (
    """CREATE TABLE IF NOT EXISTS {schema}.generation_rate_limit (
    name text PRIMARY KEY,
    paused_until timestamptz NOT NULL DEFAULT '-infinity'
)""",
    """CREATE TABLE IF NOT EXISTS {schema}.generation_rate_calls (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    at timestamptz NOT NULL,
    tokens bigint NOT NULL
)""",
    """CREATE INDEX IF NOT EXISTS generation_rate_calls_name_at
    ON {schema}.generation_rate_calls (name, at)""",
    """CREATE OR REPLACE FUNCTION {schema}.generation_rate_acquire(
    p_name text, p_lookback double precision, p_requests integer, p_tokens bigint,
    p_cost bigint, OUT granted_id bigint, OUT wait_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_paused timestamptz;
    v_now timestamptz;
    v_since timestamptz;
    v_count integer;
    v_used bigint;
    v_oldest timestamptz;
BEGIN
    INSERT INTO {schema}.generation_rate_limit (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    SELECT paused_until INTO v_paused FROM {schema}.generation_rate_limit
        WHERE name = p_name FOR UPDATE;
    -- Read the clock once the row is ours: grants are then in time order.
    v_now := clock_timestamp();
    IF v_paused > v_now THEN
        wait_seconds := extract(epoch FROM v_paused - v_now);
        RETURN;
    END IF;
    v_since := v_now - make_interval(secs => p_lookback);
    DELETE FROM {schema}.generation_rate_calls WHERE name = p_name AND at <= v_since;
    SELECT count(*), coalesce(sum(tokens), 0), min(at) INTO v_count, v_used, v_oldest
        FROM {schema}.generation_rate_calls WHERE name = p_name;
    IF (p_requests IS NULL OR v_count < p_requests)
       AND (p_tokens IS NULL OR v_count = 0 OR v_used + p_cost <= p_tokens) THEN
        INSERT INTO {schema}.generation_rate_calls (name, at, tokens)
            VALUES (p_name, v_now, p_cost) RETURNING id INTO granted_id;
        wait_seconds := 0;
        RETURN;
    END IF;
    -- Nothing changes before the oldest call leaves the window.
    wait_seconds := greatest(0.001, extract(epoch FROM v_oldest - v_since));
END;
$$""",
)


def create_rate_limit_tables(database: Database) -> None:
    """The tables and function, made once (under the ledger's DDL lock)."""
    store = SqlStore(database, pool_size=1)
    try:
        schema = f'"{database.schema}"'
        store.create_tables(*(statement.format(schema=schema) for statement in _DDL))
    finally:
        store.close()


class PostgresRateLimiter:
    """The limits for every process on this database, under the limit's `name` (the
    endpoint and model: one account's quota)."""

    def __init__(self, database: Database, name: str, limits: Limits) -> None:
        self.database = database
        self.name = name
        self.limits = limits
        self._function = f'"{database.schema}".generation_rate_acquire'
        self._calls = f'"{database.schema}".generation_rate_calls'
        self._table = f'"{database.schema}".generation_rate_limit'
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock: asyncio.Lock | None = None

    async def acquire(self, tokens: int) -> Permit:
        lookback = self.limits.lookback_seconds
        while True:
            row = await self._run(
                f"SELECT granted_id, wait_seconds FROM {self._function}(%s, %s, %s, %s, %s)",
                (self.name, lookback, self.limits.requests, self.limits.tokens, tokens),
            )
            if row is not None and row[0] is not None:
                return Permit(int(row[0]), tokens)
            wait = float(row[1]) if row is not None else _RETRY_SECONDS
            # A little jitter: waiters on the same oldest call do not all ask at once.
            await asyncio.sleep(wait + random.uniform(0, 0.02))

    async def settle(self, permit: Permit, tokens: int) -> None:
        await self._run(
            f"UPDATE {self._calls} SET tokens = %s WHERE id = %s RETURNING id",
            (tokens, permit.id),
            must=False,
        )

    async def pause(self, seconds: float) -> None:
        await self._run(
            f"UPDATE {self._table} SET paused_until = greatest(paused_until, "
            "clock_timestamp() + make_interval(secs => %s)) WHERE name = %s RETURNING name",
            (seconds, self.name),
            must=False,
        )

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run(
        self, statement: str, params: tuple[object, ...], *, must: bool = True
    ) -> tuple[Any, ...] | None:
        """One statement; through outages it retries (`must`) or gives up quietly."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        while True:
            try:
                async with self._lock:
                    conn = await self._connection()
                    cursor = await conn.execute(statement.encode(), params)
                    return await cursor.fetchone()
            except psycopg.Error as error:
                await self.aclose()
                log.warning("rate limit unavailable", extra={"error": one_line(error)})
                if not must:
                    return None
                await asyncio.sleep(_RETRY_SECONDS)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            db = self.database
            self._conn = await psycopg.AsyncConnection.connect(
                host=db.host,
                port=db.port,
                user=db.user,
                password=db.password,
                dbname=db.dbname,
                autocommit=True,
                connect_timeout=5,
            )
        return self._conn
