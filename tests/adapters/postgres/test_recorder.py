"""The ledger's PostgreSQL application recorder (adapters/postgres/recorder.py and its
modules), under real concurrency: writers commit in varying order, some hold their
transaction open after inserting while later ones commit, some roll back; readers polling
`select_notifications` see every committed event, in increasing order, none skipped. The
write path's guards (the advisory lock released when the insert fails inside it; appending
refuses a transaction that already wrote), its sessions, and the ledger's wiring."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
)

from adapters.eventstore import event_store, open_ledger
from adapters.postgres.recorder import LedgerApplicationRecorder
from tests.support.projections import wait_until
from tests.support.recorder_cases import (
    PostgresSchemaCase,
)
from tests.support.stores import POSTGRES_URL

pytestmark = pytest.mark.postgres


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


def _recorder_of(ledger: Any) -> LedgerApplicationRecorder:
    """The ledger's recorder, which `open_ledger` makes the ledger's own on PostgreSQL."""
    recorder = event_store(ledger).recorder
    assert isinstance(recorder, LedgerApplicationRecorder)
    return recorder


def _committed_ids(case: PostgresSchemaCase, recorder: LedgerApplicationRecorder) -> list[int]:
    table = f'"{case.schema}"."{recorder.events_table_name}"'
    with case.database.connect() as conn:
        rows = conn.execute(f"SELECT notification_id FROM {table} ORDER BY 1")
        return [cast(int, row[0]) for row in rows]


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
    return row[0] == 0 and cast(int, row[1]) > 0


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

    recorder._append = interrupted  # type: ignore[method-assign,assignment]
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
        results.put(("ok", result.position, _session_backend(_recorder_of(ledger))))
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
        parent_backend = _session_backend(_recorder_of(ledger))
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
        assert _session_backend(_recorder_of(ledger)) == parent_backend
    finally:
        _FORKED.clear()
        ledger.close()


def _read_in_child(results: Any) -> None:  # runs in a forked child
    try:
        datastore = _recorder_of(_FORKED["ledger"]).datastore
        with datastore.get_connection() as conn:
            row = conn.execute(_SESSION_STARTED).fetchone()
        assert row is not None
        _FORKED["ledger"].close()  # as a worker does at its end
        results.put(("ok", row["backend_start"]))
    except BaseException as error:
        results.put(("error", repr(error)))


_SESSION_STARTED = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"


def test_a_forked_child_reads_through_sessions_of_its_own(
    schema_case: PostgresSchemaCase,
) -> None:
    """The library's pool, open in the parent, holds the parent's sessions: a forked
    child reads through sessions opened after the fork, and the parent's go on, also
    once the child has closed the ledger it inherited."""
    import multiprocessing

    ledger = open_ledger(schema_case.database.url)
    try:
        datastore = _recorder_of(ledger).datastore
        with datastore.get_connection() as conn:
            row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
        assert row is not None
        forked_at = row["now"]
        _FORKED.update(ledger=ledger)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_read_in_child, args=(results,))
        child.start()
        outcome, started = results.get(timeout=60)
        child.join(60)

        assert outcome == "ok", started
        assert started > forked_at
        with datastore.get_connection() as conn:
            row = conn.execute(_SESSION_STARTED).fetchone()
        assert row is not None and row["backend_start"] < forked_at
    finally:
        _FORKED.clear()
        ledger.close()


def _save_in_child(results: Any, heard: Any) -> None:  # runs in a forked child
    try:
        # A save with no read before it: the child's pool is first opened by its notifier.
        _recorder_of(_FORKED["ledger"]).insert_events(_events(1))
        results.put("ok")
        heard.wait(60)  # alive while its notifier sends
    except BaseException as error:
        results.put(repr(error))


def test_a_forked_child_notifies_listeners_of_its_saves(schema_case: PostgresSchemaCase) -> None:
    import multiprocessing

    ledger = open_ledger(schema_case.database.url)
    try:
        recorder = _recorder_of(ledger)
        recorder.max_notification_id()  # the parent's pool open at the fork
        _FORKED.update(ledger=ledger)
        with schema_case.database.connect() as listener:
            listener.execute(f'LISTEN "{recorder.channel_name}"')
            context = multiprocessing.get_context("fork")
            results, heard = context.Queue(), context.Event()
            child = context.Process(target=_save_in_child, args=(results, heard))
            child.start()
            assert results.get(timeout=60) == "ok"
            notified = list(listener.notifies(timeout=10, stop_after=1))
            heard.set()
            child.join(60)

        assert notified, "no NOTIFY after the child's save"
        assert child.exitcode == 0
    finally:
        _FORKED.clear()
        ledger.close()


# The ledger's wiring.


def test_the_ledger_uses_it_and_notifies_listeners(schema_case: PostgresSchemaCase) -> None:
    ledger = open_ledger(schema_case.database.url)
    try:
        assert type(event_store(ledger).recorder) is LedgerApplicationRecorder
        with schema_case.database.connect() as listener:
            listener.execute(f'LISTEN "{_recorder_of(ledger).channel_name}"')
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
        assert _recorder_of(ledger).max_notification_id() == result.position
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


def test_a_notify_whose_session_was_cut_is_sent_again(
    schema_case: PostgresSchemaCase, caplog: pytest.LogCaptureFixture
) -> None:
    """The notifier's session ended by the server (as by a restart): its NOTIFY fails
    once, and the hint is sent again on a fresh session, not lost; the log says so."""
    caplog.set_level(logging.INFO, logger="lesson_ledger.postgres_recorder")
    ledger = open_ledger(schema_case.database.url)
    recorder = _recorder_of(ledger)
    request = {"school_id": "school-1", "lesson_date": "2025-09-05", "actor": "alice"}
    try:
        with schema_case.database.connect() as listener:
            listener.execute(f'LISTEN "{recorder.channel_name}"')
            ledger.request_lesson(
                **request, provider_id=str(uuid.uuid4()), time_slot="8:30-9:00", request_id="r-1"
            )
            assert list(listener.notifies(timeout=5, stop_after=1)), "no NOTIFY after a save"
            schema_case.terminate_pool_sessions(recorder)  # the notifier's, not the writer's

            ledger.request_lesson(
                **request, provider_id=str(uuid.uuid4()), time_slot="9:00-9:30", request_id="r-2"
            )
            notified = list(listener.notifies(timeout=5, stop_after=1))

        assert notified, "the NOTIFY after the cut session was lost"
        # Logged just after the NOTIFY it tells of: waited for, so that it is this test's.
        wait_until(
            lambda: any("works again" in r.message for r in caplog.records),
            5,
            "the notifier to log that NOTIFY works again",
        )
    finally:
        ledger.close()
