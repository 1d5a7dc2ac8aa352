"""Erasures heard of where no session can LISTEN (decision record 0067): on SQLite (and
through a transaction pooler alone, tests/adapters/postgres/test_pooler.py) a process
reads the count of key destructions every second, so it keeps students' keys until the
count moves rather than for 5 s, and forgets them within a poll of an erasure elsewhere.
Every destruction moves the count, also when erasures race."""

from __future__ import annotations

import threading

from adapters.keys.data_keys import DataKeys
from adapters.keys.destructions import destructions
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from tests.support.projections import wait_until
from tests.support.stores import Store
from tests.support.student_data import erased_by_the_cli_while_kept

FOR_EVER = 3600.0
"""A cache this long: only a poll can make a process forget a key in a test."""


def polling(ledger: LessonLedger) -> DataKeys:
    """The ledger's keys, once its poller has read the count of destructions."""
    keys = sealer_of(ledger).keys
    wait_until(lambda: keys.told_of_erasures, 10, "the first poll of key destructions")
    return keys


def test_a_key_is_kept_past_the_short_cache_while_destructions_are_polled(
    sqlite_store: Store,
) -> None:
    keys = polling(sqlite_store.open())
    keys.cache_seconds = 0.0  # the short cache alone would remember nothing
    owner = "student:kept"
    first = keys.key_for(owner)

    assert keys.key_for(owner) is first  # from memory, not read again


def test_an_erasure_in_another_process_is_heard_within_a_poll(sqlite_store: Store) -> None:
    """The CLI erases Ada while this process has her key in memory: it forgets it at its
    next poll."""
    ledger = sqlite_store.open()
    polling(ledger)
    erased_by_the_cli_while_kept(ledger, sqlite_store.url)


def test_a_failed_poll_trusts_no_key_kept_until_a_poll_succeeds(sqlite_store: Store) -> None:
    """The count cannot be read (its table gone): the process forgets every key and keeps
    them for the short cache alone; once a poll succeeds again it keeps them again."""
    keys = polling(sqlite_store.open())
    keys.cache_seconds = FOR_EVER
    owner = "student:kept"
    first = keys.key_for(owner)

    sqlite_store.execute("DROP TABLE data_key_destructions")
    wait_until(lambda: not keys.told_of_erasures, 10, "a failed poll")
    again = keys.key_for(owner)
    assert again is not first and again.key_id == first.key_id

    sqlite_store.execute(
        "CREATE TABLE data_key_destructions (id INTEGER PRIMARY KEY, destroyed BIGINT NOT NULL)"
    )
    wait_until(lambda: keys.told_of_erasures, 10, "a poll that succeeds again")
    kept = keys.key_for(owner)
    assert keys.key_for(owner) is kept and kept is not again


def test_racing_erasures_each_move_the_count(store: Store) -> None:
    """Eight ledgers erase eight students at once: the count moves by exactly eight (a
    lost update would let a poll miss an erasure), and a ninth ledger that had every key
    in memory reads each student's part as erased."""
    names = [f"student-{number}" for number in range(8)]
    ours = store.open()
    keys, sealer = sealer_of(ours).keys, sealer_of(ours)
    owned = {name: keys.key_for(sealer.student_owner(name)).key_id for name in names}
    ledgers = [store.open() for _ in names]
    before = destructions(keys.sql, keys.destructions_table)
    start, outcomes = threading.Barrier(len(names)), list[list[str]]()

    def erase(ledger: LessonLedger, name: str) -> None:
        owner = sealer_of(ledger).student_owner(name)
        start.wait(10)
        outcomes.append(sealer_of(ledger).keys.destroy([owner]))

    threads = [
        threading.Thread(target=erase, args=(ledger, name))
        for ledger, name in zip(ledgers, names, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(outcomes) == sorted([owned[name]] for name in names)
    assert destructions(keys.sql, keys.destructions_table) == before + len(names)
    wait_until(
        lambda: all(keys.key(key_id) is None for key_id in owned.values()),
        10,
        "every erasure to be heard of",
    )
