"""Erasures heard of at once (decision record 0054): on PostgreSQL each process LISTENs
for keys destroyed elsewhere, so it keeps students' keys in memory until told rather
than for 5 s, and forgets them as soon as another process (the CLI, another server
process) erases one. A listener whose session fails goes back to the 5 s cache until it
listens again."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.eventstore import open_ledger
from adapters.keys.data_keys import DataKeys
from adapters.keys.sealing import sealer_of
from adapters.postgres.key_erasures import KeyErasureListener
from domain import LessonLedger
from tests.support.clusters import cluster_folder, new_cluster
from tests.support.projections import wait_until
from tests.support.stores import Store, require_postgres
from tests.support.student_data import erased_by_the_cli_while_kept, parts, request

FOR_EVER = 3600.0
"""A cache this long: only an announcement can make a process forget a key in a test."""


def listening(ledger: LessonLedger) -> DataKeys:
    """The ledger's keys, once its listener listens and has read the keys' directory."""
    keys = sealer_of(ledger).keys
    wait_until(lambda: keys.told_of_erasures, 10, "the key erasure listener")
    wait_until(lambda: keys.directory_size is not None, 10, "the keys' directory")
    return keys


def test_a_key_is_kept_past_the_short_cache_while_erasures_are_heard(
    postgres_store: Store,
) -> None:
    keys = listening(postgres_store.open())
    keys.cache_seconds = 0.0  # the short cache alone would remember nothing
    owner = "student:kept"
    first = keys.key_for(owner)

    assert keys.key_for(owner) is first  # from memory, not read again

    keys.told(False)  # the listener's session failed: nothing remembered is trusted
    assert keys.key_for(owner) is not first
    again = keys.key_for(owner)
    assert keys.key_for(owner) is not again and again.key_id == first.key_id


def test_an_erasure_in_another_process_is_heard_before_the_next_request(
    postgres_store: Store,
) -> None:
    """The CLI erases Ada while this process has her key in memory: it forgets it when
    told, before its next request."""
    ledger = postgres_store.open()
    listening(ledger)
    erased_by_the_cli_while_kept(ledger, postgres_store.url)


_FORKED: dict[str, Any] = {}


def _parts_in_child(results: Any, erased: Any) -> None:  # runs in a forked child
    try:
        assert erased.wait(60), "the parent never erased"
        results.put(parts(_FORKED["ledger"], _FORKED["lesson"]))
    except BaseException as error:
        results.put(repr(error))


def test_a_forked_child_hears_of_erasures_after_the_fork(postgres_store: Store) -> None:
    """A server forking workers after opening the ledger: the parent's listener stays
    with the parent, so the child trusts no key it inherited and keeps keys only for the
    short cache. Ada erased after the fork: the child reads her part as erased."""
    ledger = postgres_store.open()
    keys = listening(ledger)
    lesson = request(ledger, "08:30-09:00", "ada", "ben")
    _FORKED.update(ledger=ledger, lesson=lesson)
    context = multiprocessing.get_context("fork")
    results, erased = context.Queue(), context.Event()
    try:
        child = context.Process(target=_parts_in_child, args=(results, erased))
        child.start()
        assert keys.destroy([sealer_of(ledger).student_owner("student-ada")])
        erased.set()
        in_child = results.get(timeout=60)
        child.join(60)
    finally:
        _FORKED.clear()

    assert in_child == [None, "student-ben"]
    assert parts(ledger, lesson) == [None, "student-ben"]


class ErasedDuringTheRead:
    """The data keys' statements, but the first read of `owner`'s key returns only after
    another ledger has destroyed that key and this process has heard of it."""

    def __init__(self, keys: DataKeys, theirs: DataKeys, owner: str) -> None:
        self.store, self.keys, self.theirs, self.owner = keys.sql, keys, theirs, owner
        self.heard = threading.Event()
        self.armed = True
        hear = keys.heard

        def heard() -> None:
            hear()
            self.heard.set()

        keys.heard = heard  # type: ignore[method-assign]

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = self.store.run(statement, params)
        if self.armed and "WHERE owner IN" in statement:  # a look-up, not the directory
            self.armed = False
            assert [row[0] for row in rows] == [self.owner]  # the key, read before
            assert self.theirs.destroy([self.owner])
            assert self.heard.wait(10), "the erasure was not heard of"
        return rows

    def close(self) -> None:
        self.store.close()


def test_a_key_read_before_its_erasure_is_not_remembered_after_it_is_heard_of(
    postgres_store: Store,
) -> None:
    """A look-up that read a student's key just before another process destroyed it
    answers with that key (the request was under way), but does not remember it: the
    next look-up makes the student a new key."""
    ours, theirs = postgres_store.open(), postgres_store.open()
    keys = listening(ours)
    keys.cache_seconds = FOR_EVER
    owner = sealer_of(ours).student_owner("student-ada")
    destroyed = keys.key_for(owner).key_id
    keys.forget([owner], [])
    keys.sql = ErasedDuringTheRead(keys, sealer_of(theirs).keys, owner)  # type: ignore[assignment]

    assert keys.key_for(owner).key_id == destroyed
    assert keys.key_for(owner).key_id != destroyed


def test_a_listener_whose_session_ends_forgets_everything_and_listens_again(
    postgres_store: Store,
) -> None:
    """PostgreSQL ends the listener's session (as a restart would): the process forgets
    every key it remembered, since an erasure may have gone unheard, and listens again."""
    keys = listening(postgres_store.open())
    first = keys.key_for("student:kept")
    postgres_store.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query = %s AND pid <> pg_backend_pid()",
        (f'LISTEN "{keys.channel}"',),
    )
    wait_until(lambda: not keys.told_of_erasures, 10, "the session's end to be noticed")
    wait_until(lambda: keys.told_of_erasures, 10, "the listener to listen again")
    again = keys.key_for("student:kept")
    assert again is not first and again.key_id == first.key_id


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_after_a_postgresql_restart_erasures_are_heard_of_again() -> None:
    """PostgreSQL is down for a while under a running ledger: the keys are not told of
    erasures meanwhile (and keep nothing long), and the listener's attempts to connect
    fail without ending it; once PostgreSQL is back the listener listens again, the
    ledger's statements run at once, and an erasure by another ledger is heard of."""
    require_postgres()
    with cluster_folder("ledger-restart-") as home:
        cluster = new_cluster(home / "data")
        cluster.start()
        try:
            url = cluster.url()
            with open_ledger(url) as ours, open_ledger(url) as theirs:
                keys = listening(ours)
                cluster.stop()
                wait_until(lambda: not keys.told_of_erasures, 10, "the restart to be noticed")
                # Down for two of the listener's attempts to connect.
                time.sleep(2.5 * KeyErasureListener.RETRY_SECONDS)
                cluster.start()
                wait_until(lambda: keys.told_of_erasures, 30, "the listener to listen again")
                keys.cache_seconds = FOR_EVER
                lesson = request(ours, "08:30-09:00", "ada")
                assert parts(ours, lesson) == ["student-ada"]
                owner = sealer_of(ours).student_owner("student-ada")
                destroyed = keys.key_for(owner).key_id

                assert sealer_of(theirs).keys.destroy([owner]) == [destroyed]

                wait_until(lambda: keys.key(destroyed) is None, 10, "the erasure to be heard")
        finally:
            cluster.stop()
