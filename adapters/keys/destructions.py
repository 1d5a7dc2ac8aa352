"""Erasures heard of where no session can LISTEN (SQLite; PostgreSQL through a transaction
pooler with no direct URL): a count of key destructions, moved by each destruction's own
transaction, which a thread of each process reads every `POLL_SECONDS`
(decision record 0067).

The count is one row, incremented in place: two erasures committing together each move
it (the second waits for the first's row), so a poll never misses one, as the highest of
ids given out by a sequence would (a lower id may commit after a higher one was read).
While the polls succeed, the process keeps keys until the count moves, as a listening
process does until it hears of an erasure: a student erased elsewhere stops being read
here within a poll, where the short cache took 5 s, and a student met again costs no
look-up.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from typing import Protocol

import psycopg

from adapters.storage.sqlstore import Cursor, SqlStore
from domain.errors import LedgerUnavailable

TABLE = "data_key_destructions"


def created(table: str) -> str:
    """The statement making the count's table (its one row comes with the first
    destruction)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " id INTEGER PRIMARY KEY CHECK (id = 1), destroyed BIGINT NOT NULL)"
    )


def counting(cursor: Cursor, table: str) -> None:
    """Within a destruction's transaction: move the count, so that it commits with it."""
    cursor.run(
        f"INSERT INTO {table} AS counted (id, destroyed) VALUES (1, 1)"
        " ON CONFLICT (id) DO UPDATE SET destroyed = counted.destroyed + 1"
    )


def destructions(sql: SqlStore, table: str) -> int:
    """How many transactions have destroyed keys (0 before the first)."""
    rows = sql.run(f"SELECT destroyed FROM {table} WHERE id = 1")
    return int(rows[0][0]) if rows else 0


class Polled(Protocol):
    """What a poller tells: `DataKeys`."""

    sql: SqlStore
    destructions_table: str

    def told(self, listening: bool) -> None: ...

    def heard(self) -> None: ...


class KeyErasurePoller:
    """Reads the count of destructions every `POLL_SECONDS` and tells `keys` when it
    moved; `close()` stops it. It ends by itself once `keys` is no longer used."""

    POLL_SECONDS = 1.0

    def __init__(self, keys: Polled) -> None:
        # Weakly: a ledger dropped unclosed should not poll for the rest of the process.
        self._keys = weakref.ref(keys)
        self._sql = keys.sql
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-erasure-polls", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, and wait for a poll under way: on SQLite the thread's connection is
        closed as it ends, so the last one to close writes the WAL back."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        seen: int | None = None
        while not self._stopping.is_set() and (keys := self._keys()) is not None:
            try:
                count = destructions(self._sql, keys.destructions_table)
            except (psycopg.Error, sqlite3.Error, OSError, LedgerUnavailable):
                # The database away, or the count's table gone: trust nothing kept.
                if seen is not None:
                    keys.told(False)
                seen = None
            else:
                if seen is None:
                    keys.told(True)  # from this count on, every destruction is seen
                elif count != seen:
                    keys.heard()
                seen = count
            del keys
            self._stopping.wait(self.POLL_SECONDS)
        if seen is not None and (keys := self._keys()) is not None:
            keys.told(False)
        self._sql.leave_thread()
