"""The SQLite side of `SqlStore` (the adapters' own small tables: tokens, idempotency,
keys): each thread keeps its connection between statements (a fresh one reads the whole
schema first, about 400 us), without changing what a statement sees or writes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from domain.errors import LedgerUnavailable


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    sql = SqlStore(Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}"))
    sql.create_tables("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, note TEXT)")
    return sql


def notes(sql: SqlStore) -> list[str]:
    return [row[0] for row in sql.run("SELECT note FROM notes ORDER BY id")]


def test_a_statement_inside_a_transaction_does_not_join_it(store: SqlStore) -> None:
    """A statement run while the same thread holds a transaction open sees what is
    committed, not the transaction's rows, and a rollback takes only the transaction's."""
    with pytest.raises(RuntimeError), store.transaction() as cursor:
        cursor.run("INSERT INTO notes (note) VALUES (%s)", ("inside",))
        assert notes(store) == []  # not committed yet
        raise RuntimeError("rolled back")

    assert notes(store) == []
    store.run("INSERT INTO notes (note) VALUES (%s)", ("after",))
    assert notes(store) == ["after"]


def test_a_failed_statement_leaves_the_next_one_working(store: SqlStore) -> None:
    with pytest.raises(LedgerUnavailable):
        store.run("SELECT nothing FROM nowhere")
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as cursor:
        cursor.run("INSERT INTO notes (id, note) VALUES (1, %s)", ("one",))
        cursor.run("INSERT INTO notes (id, note) VALUES (1, %s)", ("again",))

    store.run("INSERT INTO notes (note) VALUES (%s)", ("two",))
    assert notes(store) == ["two"]  # the failed transaction left nothing, nor a lock


def test_threads_each_write_and_read_through_one_store(store: SqlStore) -> None:
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for item in range(50):
                with store.transaction() as cursor:
                    cursor.run("INSERT INTO notes (note) VALUES (%s)", (f"{number}-{item}",))
                store.run("SELECT count(*) FROM notes")
        except BaseException as error:  # counted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(notes(store)) == 400


def _write_in_child(store: SqlStore) -> None:
    store.run("INSERT INTO notes (note) VALUES (%s)", ("child",))


def test_a_forked_child_writes_through_its_own_connection(store: SqlStore) -> None:
    store.run("INSERT INTO notes (note) VALUES (%s)", ("parent",))  # this thread's, open
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(store,))
    child.start()
    child.join(30)

    assert child.exitcode == 0
    store.run("INSERT INTO notes (note) VALUES (%s)", ("parent again",))
    assert notes(store) == ["parent", "child", "parent again"]


def test_a_closed_store_opens_again_when_used(store: SqlStore) -> None:
    store.run("INSERT INTO notes (note) VALUES (%s)", ("before",))
    store.close()
    assert notes(store) == ["before"]
