"""Runner leases (adapters/postgres/leases.py), the runner lock of a ledger reached only
through a transaction pooler: one holder at a time; a holder that cannot renew stops
before its lease expires on the server; a lease let go is taken at once. (A holder
killed with SIGKILL, taken over once its lease expired: tests/adapters/postgres/
test_pooler.py, with the follower and the worker.)"""

from __future__ import annotations

import threading
import time

import pytest

from adapters.postgres.leases import LeaseLock, runner_lock_for
from adapters.postgres.locks import AdvisoryLock, LockLost
from adapters.storage.database import Database, DatabaseSettings
from tests.support.projections import wait_until
from tests.support.stores import Store

LEASE = 1.0


def _lease_left(store: Store, name: str) -> float:
    rows = store.query(
        f'SELECT extract(epoch FROM expires_at - now()) FROM "{store.database.schema}"'
        ".runner_leases WHERE name = %s",
        (name,),
    )
    return float(rows[0][0]) if rows else 0.0


def test_one_holder_at_a_time_and_a_lease_let_go_is_taken_at_once(postgres_store: Store) -> None:
    postgres_store.open()  # makes the leases table
    database = postgres_store.database
    holder, other = LeaseLock(database, "job", seconds=LEASE), LeaseLock(database, "job")
    try:
        assert holder.acquire(wait=False)
        assert not other.acquire(wait=False)
        assert other.is_taken() and holder.held and not other.held
        time.sleep(LEASE * 1.5)  # renewed meanwhile: still held, still refused
        assert holder.held
        holder.check()
        assert not other.acquire(wait=False)

        holder.release()
        assert not other.is_taken()
        assert other.acquire(wait=False)
    finally:
        holder.release()
        other.release()


def test_a_holder_that_cannot_renew_stops_before_another_can_take_over(
    postgres_store: Store,
) -> None:
    """Another transaction holds the lease's row, so the holder's renewals wait and give
    up: the holder stops (`held` False, `check()` raises) while the server still counts
    the lease as valid, and the other runner takes it only after that."""
    postgres_store.open()
    database = postgres_store.database
    holder, other = LeaseLock(database, "job", seconds=LEASE), LeaseLock(database, "job")
    taken: list[float] = []
    try:
        assert holder.acquire(wait=True)
        with database.connect(autocommit=False) as blocker:
            blocker.execute(
                f'SELECT 1 FROM "{database.schema}".runner_leases WHERE name = %s FOR UPDATE',
                ("job",),
            )
            stop = threading.Event()

            def take() -> None:
                if other.acquire(wait=True, stop=stop):
                    taken.append(time.time())

            taker = threading.Thread(target=take)
            taker.start()
            wait_until(lambda: not holder.held, 5, "the holder to stop")
            stopped = time.time()
            left = _lease_left(postgres_store, "job")
            assert left > 0, "the holder stopped only after its lease had expired"
            with pytest.raises(LockLost, match="lease for job was lost"):
                holder.check()
        taker.join(10)
        assert taken and taken[0] >= stopped + left - 0.05
        assert other.held
    finally:
        stop.set()
        holder.release()
        other.release()


def test_a_session_lock_where_there_is_a_session_else_a_lease(postgres_store: Store) -> None:
    direct = postgres_store.database
    pooled = Database.from_url(
        f"{postgres_store.url}&pooled=true", settings=DatabaseSettings(direct_database_url=None)
    )
    with_direct = Database.from_url(
        f"{postgres_store.url}&pooled=true",
        settings=DatabaseSettings(direct_database_url=postgres_store.url),
    )
    assert isinstance(runner_lock_for(direct, "job"), AdvisoryLock)
    assert isinstance(runner_lock_for(pooled, "job"), LeaseLock)
    assert isinstance(runner_lock_for(with_direct, "job"), AdvisoryLock)
