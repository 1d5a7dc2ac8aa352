"""A PostgreSQL schema of its own for each recorder test, and recorders made from the
ledger's own settings: what the library's recorder test cases and ours run on."""

from __future__ import annotations

import threading
import uuid
from typing import Any
from unittest import TestCase

import psycopg
from eventsourcing.persistence import (
    InfrastructureFactory,
)
from eventsourcing.utils import Environment, get_topic

from adapters.postgres.recorder import LedgerApplicationRecorder
from adapters.storage.database import Database
from tests.support.stores import POSTGRES_URL, require_postgres

LEDGER_ENV_NAME = "LessonLedger"
# The library's own tests use the longest table name PostgreSQL allows (63 bytes).
LONG_TABLE_NAME = "s" * 50 + "stored_events"


def drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def join_lingering_threads() -> None:
    """The library's concurrency cases stop their reader threads without joining them;
    closing the store under a reader still running crashes the SQLite driver."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(10)


class PostgresSchemaCase(TestCase):
    """Each test gets a schema of its own on the test server, dropped afterwards; its
    recorders come from the ledger's own settings for a postgresql:// URL."""

    pool_size = 2
    max_overflow = 2

    def setUp(self) -> None:
        require_postgres()
        super().setUp()
        self.schema = f"test_rec_{uuid.uuid4().hex[:12]}"
        self.database = Database.from_url(f"{POSTGRES_URL}?schema={self.schema}")
        with self.database.connect() as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.factories: list[Any] = []

    def tearDown(self) -> None:
        join_lingering_threads()
        for factory in self.factories:
            factory.close()
        drop_schema(self.schema)
        super().tearDown()

    def factory(self, **overrides: str) -> Any:
        env = {
            **self.database.persistence_env(create_table=True),
            "APPLICATION_RECORDER_TOPIC": get_topic(LedgerApplicationRecorder),
            "POSTGRES_POOL_SIZE": str(self.pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.max_overflow),
            "POSTGRES_LOCK_TIMEOUT": "10",
            **overrides,
        }
        factory = InfrastructureFactory.construct(Environment(LEDGER_ENV_NAME, env))
        self.factories.append(factory)
        return factory

    def create_recorder(self) -> Any:
        recorder = self.factory().application_recorder()
        assert type(recorder) is LedgerApplicationRecorder
        return recorder

    def terminate_pool_sessions(self, recorder: LedgerApplicationRecorder) -> None:
        """End this recorder's pooled sessions from the server side (only ours: other
        people's sessions share the server)."""
        pids = [conn.info.backend_pid for conn in recorder.datastore.pool._pool]
        with self.database.connect() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
