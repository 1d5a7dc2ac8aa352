"""The ledger on its event store: `open_ledger(url)` wires the domain's LessonLedger to the
eventsourcing Application on the database a URL names, and keeps refused requests beside
the events.

`event_store(ledger)` gives what the other adapters follow: the recorder and the mapper
(`EventSourcedSlots.recorder`, `.mapper`), and the event log as the projections read it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Mapper
from psycopg import sql

from adapters.eventstore.application import LedgerApplication
from adapters.eventstore.slots import EventSourcedSlots
from adapters.keys.opening import open_sealer
from adapters.postgres.leases import LEASES_TABLE, create_leases_table_sql
from adapters.postgres.recorder import LedgerApplicationRecorder
from adapters.postgres.schema import EventsTable
from adapters.storage.database import APPLICATION_NAME, Database, redacted
from adapters.storage.refused_requests import SqlInvalidRequestLog
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from domain.ports import StudentData
from projections.log import EventLog

__all__ = [
    "EVENTS_TABLE",
    "EventSourcedSlots",
    "LedgerApplication",
    "event_log",
    "event_store",
    "open_ledger",
    "open_read_only_ledger",
    "standalone_mapper",
]

EVENTS_TABLE = f"{APPLICATION_NAME.lower()}_events"


def open_ledger(url: str | Database | None = None) -> LessonLedger:
    """The ledger on the database the URL (or LESSON_LEDGER_DATABASE_URL) names, with its
    keys (adapters/keys/).

    Missing tables are created on first use (on PostgreSQL, unless table creation is off:
    then a missing one is an error); the schema only if it is missing, so a role that
    owns its schema alone needs no right on the database. Errors are one clear line
    (LedgerUnavailable), a wrong key-encryption key included.
    """
    database = url if isinstance(url, Database) else Database.from_url(url)
    app = _application(database)
    try:
        sealer = open_sealer(database)  # its table made under a lock of its own
    except BaseException:
        EventSourcedSlots(app).close()
        raise
    keys, recorder = sealer.keys.unsaved, app.recorder
    if keys is not None and isinstance(recorder, LedgerApplicationRecorder):
        # A student's key made while sealing is stored by the append of the events
        # sealed under it: one commit (adapters/keys/unsaved.py).
        recorder.keys, sealer.keys_with_events = keys, True
    return LessonLedger(EventSourcedSlots(app), sealer, SqlInvalidRequestLog(database))


def _application(database: Database) -> LedgerApplication:
    """The events' Application, its tables made (one process at a time) if missing."""
    if database.kind == "sqlite":
        with database.creating_tables():
            return _construct(database, create_table=True)
    database.check_direct()
    with database.creating_tables() as conn:
        assert conn is not None
        return _construct(database, create_table=_prepare_schema(database, conn))


def _prepare_schema(database: Database, conn: psycopg.Connection[Any]) -> bool:
    """Make the schema and the leases table if missing (and allowed); whether the events
    table is still to be made. Runs under the table-creation lock (`conn`'s transaction);
    DDL goes on a connection of its own, which commits before the library's DDL runs."""
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (database.schema,)
    ).fetchone()
    schema_exists = bool(found and found[0])
    missing = database.missing_tables(conn, [LEASES_TABLE]) if schema_exists else [LEASES_TABLE]
    events = EventsTable(database.schema, EVENTS_TABLE, "uuid")
    events_exists, current = events.state(conn)
    if not database.create_tables:
        if not schema_exists:
            raise LedgerUnavailable(
                f"table creation is off (LESSON_LEDGER_CREATE_TABLES=false) and the schema "
                f"{database.schema} does not exist in {database.where}: create it, then run "
                "`lesson-ledger db migrate` as its owner"
            )
        missing += [] if events_exists else [EVENTS_TABLE]
        if missing:
            raise database.missing_tables_error(missing)
        if not current:
            raise LedgerUnavailable(
                f"table creation is off (LESSON_LEDGER_CREATE_TABLES=false) and the append "
                f"functions of {database.schema}.{EVENTS_TABLE} are an earlier release's: "
                "run `lesson-ledger db migrate` as the schema's owner"
            )
        return False
    if not schema_exists or missing:
        try:
            with (database.direct or database).connect() as ddl:
                if not schema_exists:
                    ddl.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(database.schema)
                        )
                    )
                ddl.execute(create_leases_table_sql(database.schema))
        except psycopg.Error as error:
            raise LedgerUnavailable(
                f"cannot create the ledger's schema {database.schema} in {database.where} as "
                f"{database.user!r}: {one_line(error)}"
            ) from None
    return not events_exists


def open_read_only_ledger(database: Database, student_data: StudentData) -> LessonLedger:
    """The ledger on a read replica, for its queries (histories, slots' states), opening
    students' data with the primary's keys (`student_data`): nothing is created, and
    nothing must be written through it."""
    return LessonLedger(EventSourcedSlots(_construct(database, create_table=False)), student_data)


def standalone_mapper() -> Mapper[UUID]:
    """The ledger's mapper without a database (an auditor's offline checks): it reads
    stored events' bytes, upcasting included; sealed parts stay sealed."""
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return app.mapper


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
