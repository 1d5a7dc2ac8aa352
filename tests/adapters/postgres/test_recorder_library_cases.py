"""The eventsourcing library's own recorder test cases, run on the ledger's PostgreSQL
recorder as the ledger's settings build it (`Database.persistence_env`), each test in a
schema of its own, and on the ledger's SQLite setup (the library's SQLite recorder)."""

from __future__ import annotations

import threading
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest import TestCase

import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresDatastore,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from eventsourcing.utils import Environment

from adapters.postgres.recorder import LedgerApplicationRecorder
from adapters.storage.database import Database
from tests.support.recorder_cases import (
    LEDGER_ENV_NAME,
    LONG_TABLE_NAME,
    PostgresSchemaCase,
    join_lingering_threads,
)

pytestmark = pytest.mark.postgres


class TestLibraryApplicationRecorderCases(
    PostgresSchemaCase, ApplicationRecorderTestCase[LedgerApplicationRecorder]
):
    """eventsourcing.tests.persistence.ApplicationRecorderTestCase, and the extra cases
    the library runs on its own PostgreSQL recorder (tests/persistence_tests/
    test_postgres.py upstream), on ours."""

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        self.pool_size = 12
        super().test_concurrent_no_conflicts()

    def test_concurrent_throughput(self) -> None:
        self.pool_size = 10
        super().test_concurrent_throughput()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_subscribe_concurrent_reading_and_writing(self) -> None:
        recorder = self.create_recorder()
        num_events = 20 * 100

        def read(last_notification_id: int | None) -> list[int]:
            seen: list[int] = []
            with recorder.subscribe(last_notification_id) as subscription:
                for notification in subscription:
                    seen.append(notification.id)
                    if len(seen) == num_events:
                        break
            return seen

        def write() -> None:
            for _ in range(20):
                recorder.insert_events(
                    [
                        StoredEvent(self.new_originator_id(), 1, "topic1", b"state1")
                        for _ in range(100)
                    ]
                )

        for concurrently in (True, False):
            start = recorder.max_notification_id()
            reader_result: list[list[int]] = []
            reader = threading.Thread(target=lambda s=start, r=reader_result: r.append(read(s)))
            if concurrently:
                reader.start()
            write()
            if not concurrently:
                reader.start()
            reader.join(60)
            assert reader_result, "the subscription did not deliver every event"
            assert reader_result[0] == sorted(reader_result[0])

    def test_retry_select_notifications_after_closing_connection(self) -> None:
        self.pool_size, self.max_overflow = 1, 0
        recorder = self.create_recorder()
        recorder.insert_events([StoredEvent(self.new_originator_id(), 0, "topic1", b"state1")])
        self.terminate_pool_sessions(recorder)
        assert len(recorder.select_notifications(start=1, limit=1)) == 1

    def test_retry_max_notification_id_after_closing_connection(self) -> None:
        self.pool_size, self.max_overflow = 1, 0
        recorder = self.create_recorder()
        ids = recorder.insert_events([StoredEvent(self.new_originator_id(), 0, "t", b"s")])
        self.terminate_pool_sessions(recorder)
        assert recorder.max_notification_id() == ids[-1]

    def test_retry_insert_events_after_closing_connection(self) -> None:
        self.pool_size, self.max_overflow = 1, 0
        recorder = self.create_recorder()
        recorder.insert_events([StoredEvent(self.new_originator_id(), 0, "t", b"s")])
        self.terminate_pool_sessions(recorder)
        assert recorder.insert_events([StoredEvent(self.new_originator_id(), 0, "t", b"s")])


class TestLibraryApplicationRecorderCasesLongTableName(
    PostgresSchemaCase, ApplicationRecorderTestCase[LedgerApplicationRecorder]
):
    """The library's cases with its longest table name: the function's name is derived
    from the table's and must still fit in 63 bytes."""

    def create_recorder(self) -> LedgerApplicationRecorder:
        datastore = PostgresDatastore(
            self.database.dbname,
            self.database.host,
            self.database.port,
            self.database.user,
            self.database.password,
            schema=self.schema,
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            lock_timeout=10,
        )
        self.factories.append(datastore)
        recorder = LedgerApplicationRecorder(datastore, events_table_name=LONG_TABLE_NAME)
        recorder.create_table()
        return recorder

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        self.pool_size = 12
        super().test_concurrent_no_conflicts()

    def test_concurrent_throughput(self) -> None:
        self.pool_size = 10
        super().test_concurrent_throughput()


class TestLibraryNonInterleavingCases(PostgresSchemaCase, NonInterleavingNotificationIDsBaseCase):
    """Two transactions' notification ids never interleave (each draws its ids at once)."""


class SQLiteSetupCase(TestCase):
    """Our SQLite setup (Database.persistence_env for a sqlite:/// URL): the library's SQLite
    recorder on a file in WAL mode."""

    def setUp(self) -> None:
        super().setUp()
        self.folder = TemporaryDirectory(ignore_cleanup_errors=True)  # readers may linger
        path = Path(self.folder.name) / "ledger.db"
        self.database = Database.from_url(f"sqlite:///{path}")
        self.factories: list[Any] = []

    def tearDown(self) -> None:
        join_lingering_threads()
        for factory in self.factories:
            factory.close()
        self.folder.cleanup()
        super().tearDown()

    def create_recorder(self) -> Any:
        env = Environment(LEDGER_ENV_NAME, self.database.persistence_env(create_table=True))
        factory = InfrastructureFactory.construct(env)
        self.factories.append(factory)
        recorder = factory.application_recorder()
        assert isinstance(recorder, SQLiteApplicationRecorder)
        return recorder


class TestLibraryApplicationRecorderCasesOnSQLite(
    SQLiteSetupCase, ApplicationRecorderTestCase[SQLiteApplicationRecorder]
):
    """The library's application recorder cases on our SQLite setup."""


class TestLibraryNonInterleavingCasesOnSQLite(
    SQLiteSetupCase, NonInterleavingNotificationIDsBaseCase
):
    """Non-interleaving notification ids on our SQLite setup."""
