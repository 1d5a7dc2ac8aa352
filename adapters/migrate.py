"""`lesson-ledger db migrate`: make every table and function the ledger uses, once, as the
role that owns the schema, so that the serving role needs no right to create anything.

`migrate(database)` opens what each process opens on start (the ledger and its events
table and append functions, the students' data keys and erasures, the runner leases, the
read model's tables, the log's Merkle tree and checkpoints, the pages' sessions and runs, the
worker's tracking, job queue, rate limits and token usage, the API's tokens, idempotency
keys and refused requests), with table creation
on, and tells for each schema, table and function whether it was created, replaced (an
earlier release's function) or already there. Idempotent: a second run changes nothing.
The direct and read URLs play no part: it runs on the URL it is given.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from adapters.eventstore import EVENTS_TABLE, open_ledger
from adapters.keys.erasure import Erasures
from adapters.keys.sealing import sealer_of
from adapters.postgres.jobs import PostgresJobQueue
from adapters.postgres.leases import LEASES_TABLE
from adapters.postgres.lessons_view import REBUILDS_TABLE, TRACKING_TABLE
from adapters.postgres.rate_limits import create_rate_limit_tables
from adapters.postgres.schema import EventsTable
from adapters.read_model import open_read_model
from adapters.storage.database import Database, DatabaseSettings
from adapters.storage.idempotency import IdempotencyStore
from adapters.storage.merkle_store import MerkleStore
from adapters.storage.page_runs import PageRuns
from adapters.storage.page_sessions import PageSessions
from adapters.storage.refused_requests import SqlInvalidRequestLog
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from adapters.storage.usage import SqlUsageStore
from adapters.worker import create_worker_tables
from projections.view import LIVE

TABLES = (
    EVENTS_TABLE,
    LEASES_TABLE,
    TRACKING_TABLE,
    LIVE.table,
    REBUILDS_TABLE,
    "generation_worker_tracking",
    "api_tokens",
    "idempotency_keys",
    "invalid_requests",
    "data_keys",
    "data_key_destructions",
    "erasures",
    "erasure_positions",
    "generation_jobs",
    "generation_usage",
    "generation_token_totals",
    "generation_rate_limit",
    "generation_rate_calls",
    "merkle_blocks",
    "merkle_nodes",
    "merkle_position",
    "merkle_checkpoints",
    "merkle_checkpoint_erasures",
    "merkle_reanchorings",
    "page_sessions",
    "page_runs",
)
"""Every table of the ledger's schema on PostgreSQL (a test holds this list to what
`migrate` makes)."""


@dataclass(frozen=True)
class Step:
    """One object and what migrating did to it: created, replaced, or already there."""

    kind: str  # "schema", "table" or "function"
    name: str
    outcome: str


def for_migration(url: str | None) -> Database:
    """The database at `url` (default: the direct URL, else the main one) as the
    migration sees it: table creation on, no companions."""
    settings = DatabaseSettings()
    chosen = url or settings.direct_database_url or settings.database_url
    return Database.from_url(
        chosen, settings=settings.model_copy(update={"create_tables": True}), companions=False
    )


def migrate(database: Database, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Make what is missing (see the module docstring); the steps, in order."""
    before = _inventory(database)
    ledger = open_ledger(database)  # the events, and the students' data keys
    try:
        open_read_model(database, ledger=ledger).close()
        Erasures(sealer_of(ledger), database)
    finally:
        ledger.close()
    create_worker_tables(database)
    sql = SqlStore(database, pool_size=1)
    try:
        TokenStore(sql)
        IdempotencyStore(sql)
        SqlUsageStore(sql)
        MerkleStore(sql, database.events_table)
        PageSessions(sql)
        PageRuns(sql)
        if database.kind == "postgresql":
            PostgresJobQueue(sql)
            create_rate_limit_tables(database)
        SqlInvalidRequestLog(database).sql.close()
    finally:
        sql.close()
    after = _inventory(database)
    steps = []
    for key, state in after.items():
        was = before.get(key)
        outcome = "already there" if was == state else "replaced" if was else "created"
        steps.append(Step(key[0], key[1], outcome))
        if on_step is not None:
            on_step(steps[-1])
    return steps


def _inventory(database: Database) -> dict[tuple[str, str], str]:
    """What exists: (kind, name) -> a state ("there", or a function's "current" or
    "earlier")."""
    if database.kind == "sqlite":
        return _sqlite_inventory(database)
    found: dict[tuple[str, str], str] = {}
    schema = database.schema
    with database.connect() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
        ).fetchone()
        if row and row[0]:
            found["schema", schema] = "there"
        missing = set(database.missing_tables(conn, list(TABLES))) if found else set(TABLES)
        for table in TABLES:
            if table not in missing:
                found["table", f"{schema}.{table}"] = "there"
        events = EventsTable(schema, EVENTS_TABLE, "uuid")
        exists, current = events.state(conn)
        if exists:
            for function in (events.append_function_name, events.append_one_function_name):
                there = conn.execute("SELECT to_regproc(%s)", (f'"{schema}"."{function}"',))
                if (there.fetchone() or (None,))[0] is not None:
                    found["function", f"{schema}.{function}"] = "current" if current else "earlier"
    return found


def _sqlite_inventory(database: Database) -> dict[tuple[str, str], str]:
    if database.path == ":memory:":
        return {}
    with sqlite3.connect(database.path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        ).fetchall()
    return {("table", str(name)): "there" for (name,) in rows}
