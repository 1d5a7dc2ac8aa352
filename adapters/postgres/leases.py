"""Runner locks without a session: leases in a table, for a ledger reached only through a
transaction pooler (no direct URL), where a session advisory lock cannot be held.

A lease is a row of `<schema>.runner_leases` (name, holder, expires_at). It is taken in
one statement, when there is no row or the row has expired (`INSERT ... ON CONFLICT DO
UPDATE ... WHERE expires_at < now()`), renewed by its holder four times per lease, and
deleted on release. A holder killed with SIGKILL stops renewing: another runner takes
over once the lease has expired (`LESSON_LEDGER_LEASE_SECONDS`, 10 s by default).

Safe: a holder counts its lease from the moment it *sent* its last successful renewal
(the server counts from later), and stops working after 80% of it: `held` turns False
and `check()`, called before each page of work, raises LockLost. So a holder that cannot
renew in time (a network fault, a pause) has stopped before the lease expires and
another runner can take it. Exactly once does not rest on the lease anyway (the
follower's pages check their position; the worker's results are idempotent per attempt).
`runner_lock_for()` picks a session advisory lock where the ledger has a session (the direct
URL, or a URL that is not pooled), else a lease. Why: docs/decisions/0031-runner-leases.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from adapters.postgres.locks import AdvisoryLock, LockLost
from adapters.storage.database import Database
from projections.view import RunnerLock

LEASES_TABLE = "runner_leases"
RENEWALS_PER_LEASE = 4
SAFE_FRACTION = 0.8
"""A holder stops working after this fraction of its lease without a renewal."""
_POLL_SECONDS = 0.5
log = logging.getLogger("lesson_ledger.leases")


def create_leases_table_sql(schema: str) -> Composed:
    return SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} ("
        "name text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL)"
    ).format(Identifier(schema), Identifier(LEASES_TABLE))


def runner_lock_for(
    database: Database,
    name: str,
    *,
    queries: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] | None = None,
) -> RunnerLock:
    """A session advisory lock where the ledger may hold a session, else a lease."""
    session = database.session
    if session is not None:
        return AdvisoryLock(session, name, queries=queries)
    return LeaseLock(database, name)


class LeaseLock(RunnerLock):
    """A lease named `name` in the ledger's schema (see the module docstring)."""

    def __init__(self, database: Database, name: str, *, seconds: float | None = None) -> None:
        self._database = database
        self.name = name
        self.seconds = seconds or database.lease_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        table = SQL("{}.{}").format(Identifier(database.schema), Identifier(LEASES_TABLE))
        self._take_sql = SQL(
            "INSERT INTO {t} AS lease (name, holder, expires_at) "
            "VALUES (%(name)s, %(holder)s, now() + %(seconds)s * interval '1 second') "
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE lease.expires_at < now() OR lease.holder = EXCLUDED.holder "
            "RETURNING holder"
        ).format(t=table)
        self._renew_sql = SQL(
            "UPDATE {t} SET expires_at = now() + %(seconds)s * interval '1 second' "
            "WHERE name = %(name)s AND holder = %(holder)s AND expires_at >= now() "
            "RETURNING holder"
        ).format(t=table)
        self._release_sql = SQL(
            "DELETE FROM {t} WHERE name = %(name)s AND holder = %(holder)s"
        ).format(t=table)
        self._taken_sql = SQL(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE name = %(name)s AND expires_at > now())"
        ).format(t=table)
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_lock = threading.Lock()
        self._holding = False
        self._valid_until = 0.0
        self._lost = ""
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._holding and time.monotonic() < self._valid_until

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self.held:
            return True
        if self._holding:
            self.release()  # a lease that lapsed: start afresh
        while True:
            if self._take():
                return True
            if not wait or (stop is not None and stop.is_set()):
                return False
            pause = min(self.seconds / RENEWALS_PER_LEASE, _POLL_SECONDS)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)

    def release(self) -> None:
        holding, self._holding, self._valid_until = self._holding, False, 0.0
        self._stop_renewing.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()
        if holding:
            with suppress(psycopg.Error):  # it expires on its own
                self._run(self._release_sql, fetch=False)
        self._close()

    def check(self) -> None:
        if not self._holding or time.monotonic() < self._valid_until:
            return
        reason = self._lost or f"not renewed within {self.seconds * SAFE_FRACTION:g} s"
        self.release()
        raise LockLost(f"the runner lease for {self.name} was lost: {reason}")

    def is_taken(self) -> bool:
        return bool(self._run(self._taken_sql))

    # Taking and renewing.

    def _take(self) -> bool:
        sent = time.monotonic()
        try:
            taken = self._run(self._take_sql)
        except psycopg.errors.LockNotAvailable:  # its holder is renewing it right now
            return False
        if not taken:
            return False
        self._holding, self._lost = True, ""
        self._valid_until = sent + self.seconds * SAFE_FRACTION
        self._stop_renewing = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew, args=(self._stop_renewing,), name=f"lease-{self.name}", daemon=True
        )
        self._renewer.start()
        return True

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(self.seconds / RENEWALS_PER_LEASE):
            sent = time.monotonic()
            try:
                renewed = self._run(self._renew_sql)
            except psycopg.Error as error:  # held until it lapses; tried again meanwhile
                log.warning("lease not renewed", extra={"lease": self.name, "error": str(error)})
                continue
            if stop.is_set():
                return
            if not renewed:
                self._lost = "it expired and another runner may have taken it"
                self._valid_until = 0.0
                return
            self._valid_until = sent + self.seconds * SAFE_FRACTION

    def _run(self, statement: Composed, *, fetch: bool = True) -> Any:
        """One statement in a transaction of its own, its waits bounded (lock_timeout,
        set for the transaction only); the first column of its first row."""
        params = {"name": self.name, "holder": self.holder, "seconds": self.seconds}
        timeout = f"{max(100, int(self.seconds * 1000 / RENEWALS_PER_LEASE))}ms"
        with self._conn_lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor(row_factory=tuple_row) as cursor:
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                    cursor.execute(statement, params)
                    row = cursor.fetchone() if fetch else None
            except psycopg.Error:
                self._close_locked()
                raise
        return None if row is None else row[0]

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._database.connect()
        return self._conn

    def _close(self) -> None:
        with self._conn_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
