"""The ledger's PostgreSQL application recorder: concurrent writers, readers that never
skip an event that commits late.

The library's recorder makes commit order equal notification-id order by taking
`LOCK TABLE ... IN EXCLUSIVE MODE` in every write transaction, held until commit: every
writer waits for the one before it to flush its commit, so writers never share a WAL
flush (no group commit), and a save costs several round trips. This one orders the
*readers* instead:

Writing (one round trip: `SELECT <table>_append(ids, versions, topics, states)`, a
plpgsql function, or `<table>_append_one(id, version, topic, state)` for a save of one
event, in an autocommit transaction of its own):

1. take a session advisory lock (one per events table);
2. have the transaction's id assigned (`pg_current_xact_id()`) and draw the rows'
   notification ids (`nextval`, in input order);
3. release the lock, then INSERT the rows with their ids and that transaction id in the
   `tx` column (xid8). Uniqueness conflicts are raised by the INSERT, after the lock
   is released; waiting for another writer's conflicting row happens there too.

So a transaction that drew lower notification ids than another also got a lower
transaction id: `tx` never decreases as the notification id grows. That needs the
transaction id to be assigned inside the lock, so the events insert must be the first
write of its transaction; the function refuses to run in a transaction that already
has an id. The lock is held for microseconds, never across the insert or the commit,
so writers commit (and share WAL flushes) concurrently.

The INSERT takes its rows in primary-key order, whatever order they were given in
(their notification ids keep that order). A row another running transaction has
inserted is waited for, and two saves that wait for each other's rows would deadlock:
the same slots in different orders, in racing batches. Taken in one order, the save
that waits holds only rows below the one it waits for, so no cycle can form.

Reading: `select_notifications` and `max_notification_id` return only rows whose `tx`
is below `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still
running. Every transaction below it has finished, so every row that will ever have a
lower notification id than a returned row is already visible in the same snapshot and
returned first; a transaction still running has a `tx` at or above it, hence (tx never
decreases) notification ids above every returned row. A reader can only see events in
notification-id order, with gaps where a transaction rolled back, and nothing behind
its position ever appears later.

Rows that have committed but are held back by an older transaction still running
("not settled") are waited for, up to `settle_timeout`: a caller who has just saved and
then reads the log (or its head) sees its own events, as with the library's recorder,
unless some transaction older than its own runs longer than that. Snapshots span the
whole server, so a long transaction in any database delays readers (never writers); an
idle-in-transaction timeout bounds it.

Notifications: NOTIFY inside the write transaction would serialise every commit
(PostgreSQL holds a server-wide lock from the notify queue insert until after the
commit's WAL flush), so a thread per recorder sends NOTIFY on the same channel right
after commits, coalescing bursts, in a transaction that does not wait for its flush.
LISTEN on the library's channel name keeps working. A subscription (`subscribe()`) also
reads again, every 0.1 s, while committed events are held back, because the older
transaction it waits for need not notify.

Connections: saves go through connections of the recorder's own, handed out last-in
first-out, so a single writer keeps using one connection (and one server backend, warm
in the caches). The library's pool hands them out in turn; for one client, writing
through five backends in rotation cost about 60 us more CPU and 200 us more wall time
per save than writing through one. Reads use the library's pool. A save goes straight
through libpq (psycopg's `pgconn` and its non-blocking wait): one prepared statement,
its four arrays encoded here in binary; a cursor's execute cost about 30 us more of the
client's CPU per save.

Tables made by the library's recorder are upgraded on first use: a `tx` column (0 for
the rows already there, which are all committed), and the function.
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
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry
from psycopg.rows import DictRow

from adapters.postgres.notifications import Notifier
from adapters.postgres.reads import SettledReads
from adapters.postgres.schema import EventsTable
from adapters.postgres.subscription import LedgerSubscription
from adapters.postgres.writes import PreparedAppend, WriteSessions

_SETTLE_FIRST_SLEEP = 0.0005
_SETTLE_MAX_SLEEP = 0.02


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
    ) -> None:
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
        self._appends = PreparedAppend(self._table)
        self._reads = SettledReads(self.datastore, self._table.sql)
        self._notifier = Notifier(self.datastore, self.channel_name)
        self._writers = WriteSessions(self.datastore)
        self._upgraded = False

    # Schema.

    def create_table(self) -> None:
        super().create_table()
        self._upgraded = True

    def _create_table(self, curs: psycopg.Cursor[DictRow]) -> None:
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
        with self._writers.session() as conn:
            ids = self._append(conn, stored_events)
        self._notifier.notify()
        return ids

    def close(self) -> None:
        """Close the write sessions (the library's pool closes with its datastore)."""
        self._writers.close()

    def _append(
        self, conn: psycopg.Connection[Any], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Append the events in the connection's current transaction (autocommit: one of
        its own); their notification ids, in order (see `PreparedAppend.send`)."""
        return self._appends.send(conn, stored_events)

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
