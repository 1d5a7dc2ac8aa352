"""The ledger's PostgreSQL application recorder: concurrent writers, readers that never
skip an event that commits late.

`LedgerApplicationRecorder` is the library's `PostgresApplicationRecorder` without its
table lock: a save is one round trip to a plpgsql append function that draws the ids under
a short advisory lock and stamps each row with its transaction id (`tx`); readers return
only rows older than the oldest running transaction, so nothing behind a reader's position
appears later. Why, step by step, and what each choice saves:
docs/decisions/0001-postgres-recorder-without-table-lock.md.

One module per piece, in this package: `schema.py` (the DDL, the functions, the upgrade of
tables the library made), `writes.py` (write sessions, the libpq append, error mapping),
`reads.py` (settled reads), `notifications.py` (the NOTIFY thread), `subscription.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
    Subscription,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.rows import DictRow

from adapters.postgres.notifications import Notifier
from adapters.postgres.reads import SettledReads
from adapters.postgres.schema import EventsTable
from adapters.postgres.subscription import LedgerSubscription
from adapters.postgres.writes import KeysWithEvents, PreparedAppend, WriteSessions


class LedgerApplicationRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL application recorder, without its table lock: one round
    trip per save, readers ordered by transaction id (see the module docstring)."""

    settle_timeout: float = 5.0
    """Seconds a read waits for committed events held back by an older transaction
    still running. Waiting never affects what is returned, only how fresh it is."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        pooled: bool = False,
    ) -> None:
        """`pooled`: the datastore's connections go through a transaction pooler (saves
        then leave nothing in the session; see writes.py)."""
        super().__init__(datastore, events_table_name=events_table_name)
        self._table = EventsTable(
            self.datastore.schema, self.events_table_name, self.datastore.originator_id_type
        )
        self.append_function_name = self._table.append_function_name
        self.append_one_function_name = self._table.append_one_function_name
        # The table as the library makes it, plus `tx`; the library's insert function
        # (which NOTIFYs inside the transaction) is not needed.
        self.sql_create_statements[self.create_table_statement_index] = (
            self._table.create_table_statement()
        )
        self.sql_create_statements.remove(self.sql_create_pg_function_insert_events)
        self._appends = PreparedAppend(
            self._table, pooled=pooled, lock_timeout=self.datastore.lock_timeout
        )
        self._reads = SettledReads(self.datastore, self._table.sql)
        self._notifier = Notifier(self.datastore, self.channel_name)
        self._writers = WriteSessions(self.datastore, pooled=pooled)
        self._upgraded = False
        self.keys: KeysWithEvents | None = None
        """Data keys made for the events a thread appends next, stored by its append
        (set by `open_ledger`: adapters/keys/unsaved.py)."""

    # Schema.

    def create_table(self) -> None:
        super().create_table()
        self._upgraded = True

    def _create_table(self, curs: psycopg.Cursor[DictRow]) -> None:
        # The library's (private) step of create_table(), inside its transaction: the
        # upgrade goes in the same transaction. tests/test_postgres_recorder.py checks
        # that the library still calls it.
        super()._create_table(curs)
        self._table.upgrade(curs)

    def _ensure_upgraded(self) -> None:
        """Upgrade a table the library's recorder made, or an append function an earlier
        release made (once per recorder; several processes may try at once: one does
        it, under an advisory lock)."""
        if self._upgraded:
            return
        with self.datastore.get_connection() as conn:
            exists = self._table.upgrade_if_needed(conn)
        if exists:
            self._upgraded = True

    # Writing.

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return None
        self._ensure_upgraded()
        keys = self.keys
        with self._writers.session() as conn:
            ids = self._append(conn, stored_events)
        if keys is not None:
            keys.stored()
        self._notifier.notify()
        return ids

    def close(self) -> None:
        """Close the write sessions (the library's pool closes with its datastore)."""
        self._writers.close()

    def _append(
        self, conn: psycopg.Connection[Any], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Append the events in the connection's current transaction (autocommit: one of
        its own), and the keys this thread made for them; their notification ids, in
        order (see `PreparedAppend.send`)."""
        return self._appends.send(conn, stored_events, self.keys)

    # Reading.

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Settled notifications from `start`, in order, at most `limit` (see the module
        docstring: never one that a late commit could put behind)."""
        notifications, _ = self.select_settled(
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )
        return notifications

    def select_settled(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
        settle_timeout: float | None = None,
    ) -> tuple[list[Notification], bool]:
        """The settled notifications of the range, and whether committed ones were held
        back (an older transaction was still running when the wait ran out)."""
        self._ensure_upgraded()
        timeout = self.settle_timeout if settle_timeout is None else settle_timeout
        return self._reads.select(start, limit, stop, topics, inclusive_of_start, timeout)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def max_notification_id(self) -> int | None:
        """The highest settled notification id (None for an empty log)."""
        self._ensure_upgraded()
        return self._reads.max_notification_id(self.settle_timeout)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return LedgerSubscription(
            recorder=self, select_settled=self.select_settled, gt=gt, topics=topics
        )
