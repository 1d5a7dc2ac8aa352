"""The ledger on its event store: `open_ledger(url)` wires the domain's LessonLedger to the
eventsourcing Application on the database a URL names, and keeps refused requests beside
the events.

`event_store(ledger)` gives what the other adapters follow: the recorder and the mapper
(`EventSourcedSlots.recorder`, `.mapper`), and the event log as the projections read it.
"""

from __future__ import annotations

from psycopg import sql

from adapters.eventstore.application import LedgerApplication
from adapters.eventstore.slots import EventSourcedSlots
from adapters.keys.opening import open_sealer
from adapters.storage.database import Database, redacted
from adapters.storage.refused_requests import SqlInvalidRequestLog
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from projections.log import EventLog

__all__ = ["EventSourcedSlots", "LedgerApplication", "event_log", "event_store", "open_ledger"]


def open_ledger(url: str | Database | None = None) -> LessonLedger:
    """The ledger on the database the URL (or LESSON_LEDGER_DATABASE_URL) names, with its
    keys (adapters/keys/): tables are created on first use; errors are one clear line
    (LedgerUnavailable), a wrong key-encryption key included."""
    database = url if isinstance(url, Database) else Database.from_url(url)
    app = _application(database)
    try:
        sealer = open_sealer(database)  # its table made under a lock of its own
    except BaseException:
        EventSourcedSlots(app).close()
        raise
    return LessonLedger(EventSourcedSlots(app), sealer, SqlInvalidRequestLog(database))


def _application(database: Database) -> LedgerApplication:
    """The events' Application, its tables made (one process at a time) if missing."""
    with database.creating_tables() as conn:
        if conn is None:
            return _construct(database, create_table=True)
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(database.schema))
        )
        exists = conn.execute("SELECT to_regclass(%s)", (database.events_table,)).fetchone()
        return _construct(database, create_table=not (exists and exists[0]))


def event_store(ledger: LessonLedger) -> EventSourcedSlots:
    """The event store under a ledger that `open_ledger` opened."""
    if not isinstance(ledger.slots, EventSourcedSlots):
        raise TypeError("the ledger was not opened on an event store (adapters.open_ledger)")
    return ledger.slots


def event_log(ledger: LessonLedger) -> EventLog:
    """The ledger's events in log order, as the projections read them."""
    store = event_store(ledger)
    return EventLog(store.recorder, store.mapper)


def _construct(database: Database, create_table: bool) -> LedgerApplication:
    try:
        return LedgerApplication(env=database.persistence_env(create_table))
    except LedgerUnavailable:
        raise
    except Exception as error:  # the library's and the driver's errors, as one line
        raise LedgerUnavailable(
            f"cannot open the ledger at {redacted(database.url)}: {one_line(error)}"
        ) from None
