"""The recorder's NOTIFY thread: one NOTIFY on the events channel after a burst of commits.

Sent from a thread of the recorder's own, outside the writers' transactions (why:
docs/decisions/0001-postgres-recorder-without-table-lock.md). A notification is a hint
to look at the log, never data.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Literal
from psycopg_pool import PoolClosed

log = logging.getLogger("lesson_ledger.postgres_recorder")


class Notifier:
    """NOTIFY on the events channel after commits, from a thread of this recorder's own
    (started on the first save in each process), one NOTIFY for a burst of saves.

    Its transaction does not wait for its WAL flush (`synchronous_commit` off, for it
    alone), so it holds PostgreSQL's notify lock for microseconds.
    """

    IDLE_SECONDS = 1.0
    MIN_INTERVAL_SECONDS = 0.02
    """At most one NOTIFY per interval and process (the first after a quiet spell goes at
    once): each costs a transaction (about 100 us of CPU on each side) and wakes every
    listener, and a listener reads everything new at each wake-up anyway."""
    RETRY_SECONDS = 0.1
    """Between tries while NOTIFY fails (one warning for the spell, not one a try)."""

    def __init__(self, datastore: PostgresDatastore, channel: str) -> None:
        self._datastore = datastore
        self._statement = SQL(
            "SELECT set_config('synchronous_commit', 'off', true), pg_notify({}, '')"
        ).format(Literal(channel))
        self._pending = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def notify(self) -> None:
        if not self._pending.is_set():  # set() takes the event's lock even when set
            self._pending.set()
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            thread = self._thread
            if thread is not None and self._pid == os.getpid() and thread.is_alive():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="ledger-notifier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        pool = self._datastore.pool
        try:
            pool.open()  # a forked child's opens at its first use, which may be this
        except PoolClosed:
            return  # the recorder has closed
        failing = False
        while not pool.closed:
            if not self._pending.wait(self.IDLE_SECONDS):
                continue
            # Cleared before sending: a commit after this point asks for another round.
            self._pending.clear()
            try:
                with self._datastore.get_connection() as conn:
                    conn.execute(self._statement, prepare=True)
            except Exception:
                if pool.closed:
                    return
                # Sent again: the pool drops the broken session (a restart, a network cut),
                # and listeners would otherwise wait for their own next look at the log.
                self._pending.set()
                if not failing:
                    log.warning("could not NOTIFY the events channel; trying again", exc_info=True)
                failing = True
                time.sleep(self.RETRY_SECONDS)
            else:
                if failing:
                    log.info("NOTIFY on the events channel works again")
                failing = False
                time.sleep(self.MIN_INTERVAL_SECONDS)
