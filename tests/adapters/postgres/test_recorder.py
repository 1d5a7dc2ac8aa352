"""The ledger's PostgreSQL application recorder (adapters/postgres/recorder.py and its modules).

- The eventsourcing library's own recorder test cases, run on our recorder as the
  ledger's settings build it (`Database.persistence_env`), each test in a schema of its own,
  and on our SQLite setup (the library's SQLite recorder).
- Real concurrency: writers commit in varying order, some hold their transaction open
  after inserting while later ones commit, some roll back; readers polling
  `select_notifications` see every committed event, in increasing order, none skipped.
- The write path's guards: the advisory lock is released when the insert fails inside
  it, and appending refuses a transaction that already wrote.
- Without PostgreSQL: the installed eventsourcing is 9.5.x and still has the private
  parts `adapters/postgres/subscription.py` (and the recorder's `_create_table`) rely on.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import random
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest import TestCase

import psycopg
import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresSubscription,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from eventsourcing.utils import Environment, get_topic

from adapters.eventstore import event_store, open_ledger
from adapters.postgres.recorder import LedgerApplicationRecorder
from adapters.postgres.subscription import LedgerSubscription
from adapters.storage.database import Database
from tests.support.stores import POSTGRES_URL, require_postgres

pytestmark = pytest.mark.postgres
LEDGER_ENV_NAME = "LessonLedger"
# The library's own tests use the longest table name PostgreSQL allows (63 bytes).
LONG_TABLE_NAME = "s" * 50 + "stored_events"


def _drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _join_lingering_threads() -> None:
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
        _join_lingering_threads()
        for factory in self.factories:
            factory.close()
        _drop_schema(self.schema)
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
        _join_lingering_threads()
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


# Late commits.


@pytest.fixture
def schema_case() -> Iterator[PostgresSchemaCase]:
    case = PostgresSchemaCase()
    case.pool_size, case.max_overflow = 8, 4
    case.setUp()
    try:
        yield case
    finally:
        case.tearDown()


def _events(count: int) -> list[StoredEvent]:
    return [StoredEvent(uuid.uuid4(), version, "topic", b"{}") for version in range(1, count + 1)]


def _committed_ids(case: PostgresSchemaCase, recorder: LedgerApplicationRecorder) -> list[int]:
    table = f'"{case.schema}"."{recorder.events_table_name}"'
    with case.database.connect() as conn:
        return [row[0] for row in conn.execute(f"SELECT notification_id FROM {table} ORDER BY 1")]


def test_readers_never_skip_an_event_that_commits_late(schema_case: PostgresSchemaCase) -> None:
    """Writers commit in varying order: some insert, then hold their transaction open
    until others have committed higher ids (a late commit), some roll back. Two readers
    poll the log all along, one with the recorder's settling wait and one without (the
    transaction-id filter alone): each sees every committed id, in increasing order; and
    the late commits did happen (a reader ordered by id alone would have passed them)."""
    recorder: LedgerApplicationRecorder = schema_case.create_recorder()
    table = f'"{schema_case.schema}"."{recorder.events_table_name}"'
    late_done = threading.Event()
    final: list[int] = []  # the last committed id, once every writer is done
    errors: list[BaseException] = []
    rolled_back: list[int] = []
    late_ids: list[int] = []
    overtaken: list[bool] = []  # per late commit: a higher id was visible before it

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            rounds = 0
            while rounds < 40 or not late_done.is_set():
                recorder.insert_events(_events(rng.randint(1, 5)))
                rounds += 1
                time.sleep(rng.uniform(0, 0.003))
        except BaseException as error:
            errors.append(error)

    def late_writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(POSTGRES_URL, autocommit=False) as conn:
                for round_ in range(4):
                    time.sleep(rng.uniform(0.01, 0.05))
                    ids = recorder._append(conn, _events(rng.randint(1, 3)))
                    if round_ == 3:
                        conn.rollback()  # a gap: these ids never appear
                        rolled_back.extend(ids)
                        continue
                    # Hold the transaction open while others commit higher ids.
                    overtaken.append(_wait_until_overtaken(schema_case, table, ids))
                    time.sleep(rng.uniform(0.005, 0.02))
                    conn.commit()
                    late_ids.extend(ids)
        except BaseException as error:
            errors.append(error)

    def reader(settle: float | None, seen: list[int]) -> None:
        position = 0
        deadline = time.monotonic() + 120
        try:
            while not (final and position >= final[0]) and time.monotonic() < deadline:
                page, _ = recorder.select_settled(
                    position, 25, inclusive_of_start=False, settle_timeout=settle
                )
                for notification in page:
                    assert notification.id > position, (notification.id, position)
                    position = notification.id
                    seen.append(notification.id)
                if not page:
                    time.sleep(0.001)
        except BaseException as error:
            errors.append(error)

    seen_filtered: list[int] = []
    seen_settled: list[int] = []
    readers = [
        threading.Thread(target=reader, args=(0.0, seen_filtered)),
        threading.Thread(target=reader, args=(None, seen_settled)),
    ]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    late_writers = [threading.Thread(target=late_writer, args=(100 + n,)) for n in range(3)]
    for thread in readers + writers + late_writers:
        thread.start()
    for thread in late_writers:
        thread.join(120)
    late_done.set()
    for thread in writers:
        thread.join(120)
    committed = _committed_ids(schema_case, recorder)
    final.append(committed[-1])
    for thread in readers:
        thread.join(130)
    assert not errors, errors

    assert len(overtaken) == 9 and all(overtaken), overtaken
    assert set(late_ids) <= set(committed) and len(rolled_back) > 0
    assert not set(rolled_back) & set(committed)
    assert seen_filtered == committed
    assert seen_settled == committed


def _wait_until_overtaken(case: PostgresSchemaCase, table: str, ids: list[int]) -> bool:
    """Wait (up to 5 s) until, seen from another session, a higher id has committed
    while `ids` have not: what a reader ordered by notification id alone would pass."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _visible_above(case, table, ids):
            return True
        time.sleep(0.002)
    return False


def _visible_above(case: PostgresSchemaCase, table: str, ids: list[int]) -> bool:
    """Whether, from another session, a higher id is visible while `ids` are not: what
    a reader ordered by notification id alone would pass over."""
    with case.database.connect() as conn:
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE notification_id = ANY(%s)), "
            f"count(*) FILTER (WHERE notification_id > %s) FROM {table}",
            (ids, ids[-1]),
        ).fetchone()
    assert row is not None
    return row[0] == 0 and row[1] > 0


# The write path's guards.


@pytest.mark.parametrize("count", [1, 2], ids=["one event", "two events"])
def test_a_failure_inside_the_lock_releases_it(schema_case: PostgresSchemaCase, count: int) -> None:
    """Drawing ids fails (the sequence is exhausted) while the advisory lock is held: the
    session is ended, so the next writer does not wait for the lock (1 s lock timeout).
    A save of one event and a save of several go through different functions."""
    recorder = schema_case.factory(POSTGRES_LOCK_TIMEOUT="1").application_recorder()
    recorder.insert_events(_events(2))
    sequence = f'"{schema_case.schema}"."{recorder.events_table_name}_notification_id_seq"'
    with schema_case.database.connect() as conn:  # room for all but the last event
        conn.execute(f"ALTER SEQUENCE {sequence} MAXVALUE {count + 1}")
    with pytest.raises(PersistenceError, match="maximum value"):
        recorder.insert_events(_events(count))
    with schema_case.database.connect() as conn:
        conn.execute(f"ALTER SEQUENCE {sequence} NO MAXVALUE")
    _assert_the_append_lock_is_free(schema_case, recorder)


def _assert_the_append_lock_is_free(case: PostgresSchemaCase, recorder: Any) -> None:
    """No session holds the append lock, and the next writer does not wait for it."""
    with case.database.connect() as conn:
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid::bigint = %s",
            (0x4C4C4556,),
        ).fetchone()
    assert locks == (0,)
    started = time.monotonic()
    assert recorder.insert_events(_events(1))
    assert time.monotonic() - started < 1.0


class _Interrupted(BaseException):
    """Not an error of the driver: as a KeyboardInterrupt or a SystemExit would be."""


def test_an_interruption_inside_the_lock_releases_it(schema_case: PostgresSchemaCase) -> None:
    """A write interrupted by something other than a database error (Ctrl-C cancels the
    running statement) while the session holds the advisory lock: the session is ended,
    not reused, so the lock is released and the next writer does not wait for it."""
    recorder = schema_case.factory(POSTGRES_LOCK_TIMEOUT="1").application_recorder()
    assert isinstance(recorder, LedgerApplicationRecorder)
    recorder.insert_events(_events(1))
    append = recorder._append

    def interrupted(conn: psycopg.Connection[Any], events: Any) -> list[int]:
        table = f'"{schema_case.schema}"."{recorder.events_table_name}"'
        conn.execute(
            "SELECT pg_advisory_lock((%s::bigint << 32) | %s::regclass::oid::bigint)",
            (0x4C4C4556, table),
        )
        raise _Interrupted

    recorder._append = interrupted  # type: ignore[method-assign]
    with pytest.raises(_Interrupted):
        recorder.insert_events(_events(1))
    recorder._append = append  # type: ignore[method-assign]
    _assert_the_append_lock_is_free(schema_case, recorder)
    recorder.close()


@pytest.mark.parametrize("count", [1, 2], ids=["one event", "two events"])
def test_appending_refuses_a_transaction_that_already_wrote(
    schema_case: PostgresSchemaCase, count: int
) -> None:
    """The transaction id must be assigned while the ids are drawn, so appending must be
    the transaction's first write."""
    recorder: LedgerApplicationRecorder = schema_case.create_recorder()
    with psycopg.connect(POSTGRES_URL, autocommit=False) as conn:
        conn.execute("SELECT pg_current_xact_id()")  # the transaction has an id now
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="first write"):
            recorder._append(conn, _events(count))
        conn.rollback()
        assert len(recorder._append(conn, _events(count))) == count  # a fresh one may
        conn.commit()


def test_a_conflict_is_an_integrity_error_and_leaves_a_gap(
    schema_case: PostgresSchemaCase,
) -> None:
    recorder: LedgerApplicationRecorder = schema_case.create_recorder()
    events = _events(2)
    first = recorder.insert_events(events)
    with pytest.raises(IntegrityError):
        recorder.insert_events([events[1], *_events(1)])
    later = recorder.insert_events(_events(1))
    assert first == [1, 2] and later == [5]
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2, 5]


def _wait_until_a_save_waits_for_a_row(case: PostgresSchemaCase, timeout: float = 10.0) -> bool:
    """True once some session in this database waits for another transaction (the
    conflicting row it inserts is not committed yet)."""
    deadline = time.monotonic() + timeout
    with case.database.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'transactionid' AND NOT l.granted "
                "AND a.datname = current_database()"
            ).fetchone()
            if waiting and waiting[0]:
                return True
            time.sleep(0.01)
    return False


def test_saves_of_the_same_rows_in_other_orders_never_deadlock(
    schema_case: PostgresSchemaCase,
) -> None:
    """Racing batches hold the same slots in different orders. A transaction holds row
    `low` uncommitted; a save of [`high`, `low`] waits for it. The save must not have
    taken `high` while it waits (it would deadlock with the first transaction writing
    `high` next): the first writes `high` at once, commits, and the save is refused
    with an IntegrityError, nothing of it stored."""
    recorder: LedgerApplicationRecorder = schema_case.create_recorder()
    low, high = uuid.UUID(int=1), uuid.UUID(int=2)  # PostgreSQL orders uuids bytewise
    table = f'"{schema_case.schema}"."{recorder.events_table_name}"'
    outcome: list[BaseException | list[int] | None] = []
    with psycopg.connect(POSTGRES_URL, autocommit=False) as holder:
        # Shorter than deadlock_timeout (1 s): waiting for the save's `high` fails here.
        holder.execute("SET LOCAL lock_timeout = '500ms'")
        recorder._append(holder, [StoredEvent(low, 1, "holder", b"{}")])

        def save() -> None:
            try:
                both = [StoredEvent(high, 1, "save", b"{}"), StoredEvent(low, 1, "save", b"{}")]
                outcome.append(list(recorder.insert_events(both) or []))
            except BaseException as error:
                outcome.append(error)

        saver = threading.Thread(target=save)
        saver.start()
        assert _wait_until_a_save_waits_for_a_row(schema_case), "the save never waited"
        holder.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state, "
            f"notification_id, tx) VALUES (%s, 1, 'holder', '', "
            f"nextval(pg_get_serial_sequence('{table}', 'notification_id')), "
            "pg_current_xact_id())",
            (high,),
        )
        holder.commit()
        saver.join(30)
    assert not saver.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], IntegrityError), outcome
    with schema_case.database.connect() as conn:
        rows = conn.execute(f"SELECT originator_id, topic FROM {table} ORDER BY 1").fetchall()
    assert rows == [(low, "holder"), (high, "holder")]
    recorder.close()


# The write sessions.


def _session_backend(recorder: LedgerApplicationRecorder) -> int:
    """The server backend of the session the next save would use."""
    with recorder._writers.session() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_single_writer_keeps_one_session(schema_case: PostgresSchemaCase) -> None:
    """Saves one after another go through one server backend (the library's pool hands
    out its five in turn), and the sessions stay within the pool's size under threads."""
    recorder: LedgerApplicationRecorder = schema_case.create_recorder()
    backends = set()
    for _ in range(20):
        recorder.insert_events(_events(1))
        backends.add(_session_backend(recorder))
    assert len(backends) == 1
    limit = recorder.datastore.pool.max_size
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(20):
                recorder.insert_events(_events(2))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(limit * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert 1 < recorder._writers._open <= limit
    assert len(recorder.select_notifications(None, 10_000)) == 20 + limit * 2 * 20 * 2
    recorder.close()


_FORKED: dict[str, Any] = {}


def _write_in_child(results: Any) -> None:  # runs in a forked child
    try:
        ledger = _FORKED["ledger"]
        result = ledger.request_lesson(**_FORKED["request"], request_id="in-child")
        results.put(("ok", result.position, _session_backend(event_store(ledger).recorder)))
    except BaseException as error:
        results.put(("error", repr(error), 0))


def test_a_forked_child_opens_sessions_of_its_own(schema_case: PostgresSchemaCase) -> None:
    """A server forking workers after opening the ledger: the child never writes through
    the parent's sessions (two processes on one connection corrupt it); both go on."""
    import multiprocessing

    ledger = open_ledger(schema_case.database.url)
    try:
        request = {
            "provider_id": str(uuid.uuid4()),
            "school_id": "school-1",
            "lesson_date": "2025-09-05",
            "actor": "parent",
        }
        ledger.request_lesson(**request, time_slot="8:00-8:30", request_id="before-fork")
        parent_backend = _session_backend(event_store(ledger).recorder)
        _FORKED.update(ledger=ledger, request={**request, "time_slot": "9:00-9:30"})
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_write_in_child, args=(results,))
        child.start()
        outcome, position, child_backend = results.get(timeout=60)
        child.join(60)
        assert outcome == "ok", position
        assert child_backend != parent_backend
        after = ledger.request_lesson(**request, time_slot="8:30-9:00", request_id="after-fork")
        assert after.outcome == "accepted" and after.position is not None
        assert after.position > position
        assert _session_backend(event_store(ledger).recorder) == parent_backend
    finally:
        _FORKED.clear()
        ledger.close()


# The ledger's wiring.


def test_the_ledger_uses_it_and_notifies_listeners(schema_case: PostgresSchemaCase) -> None:
    ledger = open_ledger(schema_case.database.url)
    try:
        assert type(event_store(ledger).recorder) is LedgerApplicationRecorder
        with schema_case.database.connect() as listener:
            listener.execute(f'LISTEN "{event_store(ledger).recorder.channel_name}"')
            result = ledger.request_lesson(
                provider_id=str(uuid.uuid4()),
                school_id="school-1",
                lesson_date="2025-09-05",
                time_slot="8:30-9:00",
                request_id="req-1",
                actor="alice",
            )
            notified = list(listener.notifies(timeout=5, stop_after=1))
        assert notified, "no NOTIFY after a save"
        assert event_store(ledger).recorder.max_notification_id() == result.position
    finally:
        ledger.close()


def test_a_table_made_by_the_library_recorder_is_upgraded(
    schema_case: PostgresSchemaCase,
) -> None:
    """Events written by the library's recorder stay readable; new ones follow them."""
    stock_factory = schema_case.factory(APPLICATION_RECORDER_TOPIC="")
    stock: ApplicationRecorder = stock_factory.application_recorder()
    assert type(stock) is PostgresApplicationRecorder
    old = stock.insert_events(_events(3))
    recorder = schema_case.factory(CREATE_TABLE="n").application_recorder()
    assert type(recorder) is LedgerApplicationRecorder
    assert recorder.max_notification_id() == old[-1]
    new = recorder.insert_events(_events(2))
    assert [n.id for n in recorder.select_notifications(None, 10)] == [*old, *new]


def test_an_append_function_of_an_earlier_release_is_replaced(
    schema_case: PostgresSchemaCase,
) -> None:
    """A database whose append function an earlier release made (rows inserted in the
    order given, which can deadlock; no function of one event) gets the current ones
    when a ledger first writes."""
    first = schema_case.create_recorder()
    first.insert_events(_events(1))
    function = f'"{schema_case.schema}"."{first.append_function_name}"'
    function_one = f'"{schema_case.schema}"."{first.append_one_function_name}"'
    with schema_case.database.connect() as conn:
        conn.execute(f"DROP FUNCTION {function_one}")
        source = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regproc(%s)", (function,)
        ).fetchone()
        assert source is not None
        current = str(source[0]).replace("ORDER BY e.i, e.v;", ";").splitlines()
        earlier = [line for line in current if "lesson-ledger append, revision" not in line]
        conn.execute(
            f"CREATE OR REPLACE FUNCTION {function}(ids uuid[], versions bigint[], "
            "topics text[], states bytea[]) RETURNS bigint[] LANGUAGE plpgsql AS $body$"
            + "\n".join(earlier)
            + "$body$"
        )
    recorder = schema_case.factory(CREATE_TABLE="n").application_recorder()
    recorder.insert_events(_events(1))
    recorder.insert_events(_events(2))
    with schema_case.database.connect() as conn:
        source = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regproc(%s)", (function,)
        ).fetchone()
        one = conn.execute("SELECT to_regproc(%s) IS NOT NULL", (function_one,)).fetchone()
    assert source is not None and "ORDER BY e.i, e.v" in str(source[0])
    assert one == (True,)
    assert len(recorder.select_notifications(None, 10)) == 4


# The library's private parts the recorder relies on (checked without PostgreSQL).

# What LedgerSubscription reads and writes of the library's PostgresSubscription.
SUBSCRIPTION_ATTRIBUTES = (
    "_notifications_queue",
    "_has_been_notified",
    "_last_notification_id",
    "_select_limit",
    "_topics",
    "_thread_error",
    "_has_been_stopped",
    "_recorder",
)
CHECK_SUBSCRIPTION = (
    "adapters/postgres/subscription.py must be checked against the new library version"
)


def _self_attributes(function: Any, stored: bool) -> set[str]:
    """The `self.<name>` attributes a function's (or class's) source assigns (`stored`)
    or reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    context = ast.Store if stored else ast.Load
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, context)
    }


def _library_classes(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if c.__module__.startswith("eventsourcing.")]


def test_the_installed_eventsourcing_is_the_pinned_one() -> None:
    version = importlib.metadata.version("eventsourcing")
    assert version.startswith("9.5."), (
        f"eventsourcing {version} is installed, the recorder was written for 9.5.x: "
        f"{CHECK_SUBSCRIPTION} (and adapters/postgres/recorder.py's _create_table), then "
        "move the pin in pyproject.toml and this test"
    )


def test_the_library_subscription_still_has_the_hooks_it_overrides() -> None:
    """`_pull` and `_listen` are still defined by PostgresSubscription or its bases, and
    still called by them (the pull thread and the listen thread)."""
    version = importlib.metadata.version("eventsourcing")
    library = _library_classes(PostgresSubscription)
    for hook in ("_pull", "_listen"):
        definers = [c.__name__ for c in library if hook in vars(c)]
        assert definers, (
            f"eventsourcing {version}: PostgresSubscription and its bases no longer define "
            f"{hook}, which LedgerSubscription overrides: {CHECK_SUBSCRIPTION}"
        )
        callers = [c.__name__ for c in library if hook in _self_attributes(c, stored=False)]
        assert callers, (
            f"eventsourcing {version}: PostgresSubscription and its bases no longer use "
            f"self.{hook}, which LedgerSubscription overrides: {CHECK_SUBSCRIPTION}"
        )


@pytest.mark.parametrize("attribute", SUBSCRIPTION_ATTRIBUTES)
def test_the_library_subscription_still_sets_what_ours_uses(attribute: str) -> None:
    """Each attribute LedgerSubscription reads or writes is still set by the __init__ of
    PostgresSubscription or of one of its bases."""
    version = importlib.metadata.version("eventsourcing")
    inits = [
        vars(c)["__init__"] for c in _library_classes(PostgresSubscription) if "__init__" in vars(c)
    ]
    set_by_library = set().union(*(_self_attributes(init, stored=True) for init in inits))
    assert attribute in set_by_library, (
        f"eventsourcing {version}: the attribute {attribute} is missing from "
        f"PostgresSubscription.__init__ and its bases' (LedgerSubscription reads or writes "
        f"it): {CHECK_SUBSCRIPTION}"
    )


def test_the_list_of_library_attributes_is_what_our_subscription_uses() -> None:
    """SUBSCRIPTION_ATTRIBUTES is every private attribute of the library's that
    LedgerSubscription uses (its own are `_held_back`, `_select_settled` and its two
    overrides): a new one used there must be added to the checks above."""
    used = _self_attributes(LedgerSubscription, stored=False) | _self_attributes(
        LedgerSubscription, stored=True
    )
    own = set(vars(LedgerSubscription)) | _self_attributes(LedgerSubscription.__init__, stored=True)
    library_private = {name for name in used - own if name.startswith("_")}
    listed = set(SUBSCRIPTION_ATTRIBUTES)
    assert library_private == listed, (
        "adapters/postgres/subscription.py uses private attributes of the library's not in "
        f"SUBSCRIPTION_ATTRIBUTES: {sorted(library_private - listed)} (add them), or no "
        f"longer uses listed ones: {sorted(listed - library_private)} (drop them)"
    )


def test_the_library_recorder_still_creates_tables_through_the_hook_ours_overrides() -> None:
    """LedgerApplicationRecorder overrides `_create_table` to upgrade the table in the
    library's create-table transaction: the library must still call it."""
    version = importlib.metadata.version("eventsourcing")
    library = _library_classes(PostgresApplicationRecorder)
    assert any("_create_table" in vars(c) for c in library), (
        f"eventsourcing {version}: PostgresApplicationRecorder and its bases no longer "
        "define _create_table: adapters/postgres/recorder.py must be checked against the "
        "new library version"
    )
    creators = [c for c in library if "create_table" in vars(c)]
    assert creators and "_create_table" in _self_attributes(
        vars(creators[0])["create_table"], stored=False
    ), (
        f"eventsourcing {version}: {creators[0].__name__ if creators else '?'}.create_table "
        "no longer calls self._create_table: adapters/postgres/recorder.py must be checked "
        "against the new library version"
    )
