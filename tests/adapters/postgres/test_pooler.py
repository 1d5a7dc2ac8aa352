"""The ledger through PgBouncer (Debian's 1.18) in transaction mode, as on a managed
PostgreSQL's pooled URL: each transaction may land on another server session, and a named
prepared statement, a SET or a session lock outlives nothing.

Every test runs twice: through the pooler alone (runner leases, polling) and with a
direct URL beside it (LISTEN, session advisory locks): the races (threads, processes,
batches), the calendar's HTTP race on two server processes, the read model's follower
and the generation worker, each with a standby that takes over when the active one is
killed. Without pgbouncer they skip (fail under CI=true).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from adapters.eventstore import event_store, open_ledger
from adapters.keys.sealing import sealer_of
from adapters.storage.database import (
    DIRECT_URL_SETTING,
    Database,
    DatabaseSettings,
    DatabaseUrlError,
)
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from tests.adapters.postgres.test_keys_with_events import key_rows, opening_tx
from tests.support import fake_openai
from tests.support.calendar_race import (
    PROVIDER,
    assert_one_request_per_slot,
    race_calendar,
    serving_pids,
)
from tests.support.clusters import Bouncer, pgbouncer
from tests.support.fake_openai import FakeOpenAI
from tests.support.generation import (
    all_decided,
    key,
    request_lessons,
    results,
    wait_for,
    worker_env,
    worker_processes,
)
from tests.support.json_logs import log_entries
from tests.support.projections import ProjectionProcess, read_model, wait_until, write_requests
from tests.support.race_checks import (
    assert_no_errors,
    assert_one_accepted_rest_conflicts,
    assert_processes_raced_at_the_same_time,
)
from tests.support.racing import Plan, race_in_processes, race_in_threads
from tests.support.served import serving_process
from tests.support.stores import POSTGRES_URL, Store, require_postgres
from tests.support.student_data import parts, request

pytestmark = pytest.mark.timeout(180)

THREADS = 8
PROCESSES = 3
THREADS_PER_PROCESS = 2
RACE_TIMEOUT = 60.0
LEASE_SECONDS = 2.0
DEADLINE = 60.0
POOLER_ONLY, WITH_DIRECT = "pooler only", "pooler and direct URL"


@pytest.fixture(scope="module")
def bouncer() -> Iterator[Bouncer]:
    with pgbouncer() as running:
        yield running


@pytest.fixture(params=[POOLER_ONLY, WITH_DIRECT])
def pooled(
    request: pytest.FixtureRequest, bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A store in a fresh schema whose URL is the pooler's, with or without a direct URL
    (set in the environment, so that the processes a test starts have it too)."""
    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("LESSON_LEDGER_LEASE_SECONDS", str(LEASE_SECONDS))
    if request.param == WITH_DIRECT:
        monkeypatch.setenv(DIRECT_URL_SETTING, f"{POSTGRES_URL}?schema={schema}")
    else:
        monkeypatch.delenv(DIRECT_URL_SETTING, raising=False)
    store = Store("postgresql", bouncer.url(schema=schema))
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _ledger_settings() -> dict[str, str]:
    """The ledger's settings of this test, for a process started with its own env."""
    names = (DIRECT_URL_SETTING, "LESSON_LEDGER_LEASE_SECONDS")
    return {name: os.environ[name] for name in names if name in os.environ}


def _worker_states(log: Path) -> list[str]:
    """The states a worker process logged, in order."""
    return [
        entry["state"]
        for entry in log_entries(log)
        if entry.get("logger") == "lesson_ledger.worker" and "state" in entry
    ]


def _lease_left(store: Store, name: str) -> float:
    """Seconds the lease `name` has left (0 without one), by the server's clock."""
    rows = store.query(
        f'SELECT extract(epoch FROM expires_at - now()) FROM "{store.database.schema}"'
        ".runner_leases WHERE name = %s",
        (name,),
    )
    return max(0.0, float(rows[0][0])) if rows else 0.0


# What the pooler is, as the ledger sees it.


def test_the_pooler_is_recognised_and_the_ledger_leaves_nothing_in_its_sessions(
    pooled: Store,
) -> None:
    ledger = pooled.open()
    assert pooled.database.is_pooled()
    alone = DatabaseSettings(direct_database_url=None)
    assert not Database.from_url(POSTGRES_URL, settings=alone).is_pooled()
    prisma = Database.from_url(f"{POSTGRES_URL}?pgbouncer=true", settings=alone)
    assert prisma.is_pooled()  # as the URL says, whatever a probe would find
    recorder = event_store(ledger).recorder
    write_requests(ledger, 30)
    # Through the pooler every server session is shared: none holds a prepared statement
    # of the ledger's or a session lock when the ledger is idle.
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
            (0x4C4C4556,),
        ).fetchone()
    assert held == (0,)
    assert recorder.max_notification_id() == 30


def test_a_direct_url_through_a_transaction_pooler_is_one_line_at_start(
    bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(DIRECT_URL_SETTING, bouncer.url(schema=schema))
    with pytest.raises(DatabaseUrlError) as raised:
        open_ledger(bouncer.url(schema=schema))
    message = str(raised.value)
    assert "LESSON_LEDGER_DIRECT_DATABASE_URL" in message
    assert "transaction-mode pooler" in message
    assert "\n" not in message
    monkeypatch.setenv(DIRECT_URL_SETTING, bouncer.url(schema=schema, pooled="true"))
    with pytest.raises(DatabaseUrlError, match="says it is pooled"):
        open_ledger(bouncer.url(schema=schema))


@pytest.mark.parametrize("count", [1, 2], ids=["one event", "two events"])
def test_a_failed_append_through_the_pooler_leaves_no_lock_on_the_shared_session(
    pooled: Store, count: int
) -> None:
    """Drawing ids fails (the sequence is exhausted) while the append lock is held. The
    client's connection to the pooler is closed, but the server session behind it lives
    on, shared: the function itself must release the lock, or every writer would wait.
    A save of one event and a save of several go through different functions."""
    ledger = pooled.open()
    recorder = event_store(ledger).recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    recorder.insert_events(_events(2))
    sequence = f'"{pooled.database.schema}"."{recorder.events_table_name}_notification_id_seq"'
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:  # room for all but the last
        conn.execute(f"ALTER SEQUENCE {sequence} MAXVALUE {count + 1}")
    with pytest.raises(PersistenceError, match="maximum value"):
        recorder.insert_events(_events(count))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"ALTER SEQUENCE {sequence} NO MAXVALUE")
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
            (0x4C4C4556,),
        ).fetchone()
    assert locks == (0,)
    started = time.monotonic()
    assert recorder.insert_events(_events(1))
    assert time.monotonic() - started < 2.0


def _events(count: int) -> list[StoredEvent]:
    return [StoredEvent(uuid.uuid4(), 1, "topic", b"{}") for _ in range(count)]


# Erasures (decision record 0054).


def test_an_erasure_through_the_pooler_reaches_another_process(pooled: Store) -> None:
    """Erased through the pooler, while the other ledger keeps keys for an hour: with a
    direct URL it hears of it (LISTEN there, NOTIFY through the pooler); through the pooler
    alone, where it cannot listen, it polls the count of destructions (decision record
    0067) and forgets the key at its next poll."""
    ours, theirs = pooled.open(), pooled.open()
    keys = sealer_of(ours).keys
    wait_until(lambda: keys.told_of_erasures, 10, "the key erasure listener or poller")
    keys.cache_seconds = 3600.0
    owner = sealer_of(ours).student_owner("student-ada")
    destroyed = keys.key_for(owner).key_id

    assert sealer_of(theirs).keys.destroy([owner]) == [destroyed]

    wait_until(lambda: keys.key(destroyed) is None, 10, "the erasure to reach the other ledger")
    assert keys.key_for(owner).key_id != destroyed


def test_a_new_students_key_through_the_pooler_is_stored_with_their_lesson(
    pooled: Store,
) -> None:
    """With a direct URL (a keys' directory), the append through the pooler stores a new
    student's key in the lesson's own transaction (decision record 0064); through the
    pooler alone the key is looked up, then stored on its own. Either way the part reads
    back in another process."""
    ledger = pooled.open()
    request(ledger, "08:00-08:30", "ada")  # the month's date keys, made
    with_events = DIRECT_URL_SETTING in os.environ
    if with_events:
        wait_until(lambda: sealer_of(ledger).keys.makes_first, 10, "the keys' directory")

    lesson = request(ledger, "08:30-09:00", "ben")

    [(_, stored_in)] = key_rows(pooled, ledger, "student-ben")
    assert (stored_in == opening_tx(pooled, lesson)) is with_events
    assert parts(pooled.open(), lesson) == ["student-ben"]


# The races.


def test_threads_racing_through_the_pooler_get_one_winner_each(pooled: Store) -> None:
    ledger = pooled.open()
    workers = [f"t{i}" for i in range(THREADS)]

    calls = race_in_threads(workers, Plan(), lambda _: pooled.open(), RACE_TIMEOUT)

    assert_one_accepted_rest_conflicts(pooled, ledger, calls, racers=THREADS)


def test_processes_racing_through_the_pooler_get_one_winner_each(pooled: Store) -> None:
    ledger = pooled.open()

    calls = race_in_processes(pooled.url, PROCESSES, THREADS_PER_PROCESS, Plan(), RACE_TIMEOUT)

    assert_no_errors(calls, {"accepted", "conflict"})
    assert_processes_raced_at_the_same_time(calls, PROCESSES)
    assert_one_accepted_rest_conflicts(pooled, ledger, calls, PROCESSES * THREADS_PER_PROCESS)


def test_overlapping_batches_through_the_pooler_get_one_winner_per_slot(pooled: Store) -> None:
    ledger = pooled.open()
    plan = Plan(command="batch")

    calls = race_in_processes(pooled.url, PROCESSES, THREADS_PER_PROCESS, plan, RACE_TIMEOUT)

    assert_no_errors(calls, {"accepted", "conflict"})
    assert_one_accepted_rest_conflicts(pooled, ledger, calls, PROCESSES * THREADS_PER_PROCESS)


def test_the_calendar_race_on_two_server_processes_through_the_pooler(
    pooled: Store, tmp_path: Path
) -> None:
    pooled.open()  # the tables exist before the server processes start
    sql = SqlStore(pooled.database)
    token = TokenStore(sql).create("provider", PROVIDER)[1]
    sql.close()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with (
        serving_process(pooled.url, logs[0]) as (first, _),
        serving_process(pooled.url, logs[1]) as (second, _),
    ):
        responses = race_calendar([first, second], token, clients=6, rounds=3)

        assert_one_request_per_slot(responses, pooled, first, token)
    assert len(serving_pids(*logs)) == 2, "the two server processes did not both serve"


# The runners: one active, a standby that takes over.


def test_a_follower_through_the_pooler_is_replaced_when_killed(pooled: Store) -> None:
    ledger = pooled.open()
    write_requests(ledger, 50)
    first = ProjectionProcess(pooled, "follow")
    second: ProjectionProcess | None = None
    try:
        first.wait_for_line("lessons: active")
        second = ProjectionProcess(pooled, "follow")
        second.wait_for_line("lessons: waiting")
        with read_model(pooled, ledger) as model:
            assert model.wait_for(model.head(), timeout=30)
            write_requests(ledger, 20, prefix="while-first")
            assert model.wait_for(model.head(), timeout=30)  # LISTEN, or polling

            left = _lease_left(pooled, "lessons")
            killed = time.monotonic()
            first.kill()  # SIGKILL: no release, no goodbye
            second.wait_for_line("lessons: active")
            if pooled.database.direct is None:
                # A lease: taken over only once it expired, and then within a poll.
                assert left > 0
                assert left - 0.2 <= time.monotonic() - killed <= left + LEASE_SECONDS + 5
            write_requests(ledger, 20, prefix="after-kill")
            assert model.wait_for(model.head(), timeout=30)
            assert model.verify().ok
            assert second.stop() == 0
    finally:
        first.close()
        if second is not None:
            second.close()


def test_generation_workers_through_the_pooler_generate_each_attempt_once(
    pooled: Store, tmp_path: Path
) -> None:
    ledger = pooled.open()
    ids = request_lessons(ledger, 12)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with FakeOpenAI(default=fake_openai.ok(delay=0.1)) as fake:
        env = worker_env(fake.base_url, **_ledger_settings())
        with worker_processes(pooled.url, env, logs, "--concurrency", "3") as workers:
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
            active = [n for n, log in enumerate(logs) if "active" in _worker_states(log)]
            assert len(active) == 1, [_worker_states(log) for log in logs]
            standby = 1 - active[0]

            workers[active[0]].kill()
            workers[active[0]].wait(10)
            more = request_lessons(ledger, 4, prefix="more", first_slot=12)
            wait_for(all_decided(ledger, more), DEADLINE, "the standby generated the rest")
            assert "active" in _worker_states(logs[standby])
        calls = fake.calls_by_attempt()

    assert set(calls) == {key(i) for i in ids + more}
    assert max(calls.values()) == 1, "an attempt was generated twice"
    for lesson_id in ids + more:
        assert results(ledger, lesson_id) == {("LessonGenerated", 1): 1}, lesson_id
