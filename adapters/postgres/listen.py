"""Waking a follower when events are recorded: LISTEN on the channel the ledger's recorder
NOTIFYs on after each commit, on a session of its own (where the ledger may hold one: the
direct URL, or a URL that is not pooled)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from adapters.storage.database import Database
from projections.view import Wakeup


class ListenWakeup(Wakeup):
    """LISTEN on the events table's channel, on a connection of its own."""

    SLICE_SECONDS = 0.25  # how soon `wake()` and `close()` are noticed

    def __init__(self, database: Database, channel: str) -> None:
        self._database = database
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = 0
        """The process that opened the connection."""
        self._woken = threading.Event()

    def _listening(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = self._database.connect()
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def open(self) -> None:
        """Start listening before the first catch-up, so no notification falls between."""
        self._listening()

    def wait(self, timeout: float) -> None:
        conn = self._listening()
        deadline = time.monotonic() + timeout
        try:
            while not self._woken.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                notified = False
                for _ in conn.notifies(timeout=min(self.SLICE_SECONDS, remaining), stop_after=1):
                    notified = True
                if notified:
                    # One catch-up answers every notification queued so far.
                    for _ in conn.notifies(timeout=0.001):
                        pass
                    return
        except psycopg.Error:
            self.close()  # listen again on a new connection next time
            raise
        finally:
            self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        # A forked child's is the parent's session: let go, never closed (that would end
        # it for the parent, decision record 0065).
        if conn is not None and self._pid == os.getpid():
            conn.close()
