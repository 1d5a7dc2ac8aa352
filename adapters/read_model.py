"""Opening the lessons read model on the ledger's database (SQLite or PostgreSQL).

`open_read_model(url)` gives a `projections.read_model.LessonsReadModel`: its tables
are created on first use, next to the events (PostgreSQL: in the ledger's schema),
with table creation serialised across processes (the advisory lock and the lock file
that `open_ledger` uses): concurrent DDL fails. Tables that exist are not created again,
so a role with no right to create them serves once they are there.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.eventstore import event_log, event_store, open_ledger
from adapters.postgres.lessons_view import PostgresLessonsView
from adapters.sqlite.lessons_view import DEFAULT_POLL_INTERVAL, SQLiteLessonsView
from adapters.storage.database import Database
from adapters.storage.tables import create_missing
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from projections.read_model import LessonsReadModel
from projections.view import LessonsView

_DEFAULTS = {
    "POSTGRES_POOL_SIZE": "2",
    "POSTGRES_MAX_OVERFLOW": "8",
    "POSTGRES_CONNECT_TIMEOUT": "5",
    "POSTGRES_LOCK_TIMEOUT": "10",
    "SQLITE_LOCK_TIMEOUT": "30",
}


def open_read_model(
    url: str | Database | None = None,
    *,
    ledger: LessonLedger | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> LessonsReadModel:
    """The lessons read model on the database the URL (or LESSON_LEDGER_DATABASE_URL)
    names. Pass the process's `ledger` to share it; otherwise one is opened (and closed
    with the read model). Errors are one clear line (LedgerUnavailable)."""
    database = url if isinstance(url, Database) else Database.from_url(url)
    own_ledger = ledger is None
    ledger = ledger if ledger is not None else open_ledger(database)
    try:
        view = open_lessons_view(database, ledger, poll_interval=poll_interval)
    except BaseException:
        if own_ledger:
            ledger.close()
        raise
    return LessonsReadModel(
        view,
        event_log(ledger),
        event_store(ledger).mapper,
        on_close=ledger.close if own_ledger else None,
    )


def open_lessons_view(
    database: Database, ledger: LessonLedger, *, poll_interval: float = DEFAULT_POLL_INTERVAL
) -> LessonsView:
    """The store's view recorder, its tables created if missing."""
    env = database.recorder_env(_DEFAULTS)
    factory: Any = InfrastructureFactory.construct(Environment("Lessons", env))
    try:
        view: SQLiteLessonsView | PostgresLessonsView
        if database.kind == "sqlite":
            view = SQLiteLessonsView(
                factory.datastore, database=database, poll_interval=poll_interval
            )
        else:
            recorder: Any = event_store(ledger).recorder
            view = PostgresLessonsView(
                factory.datastore,
                database=database,
                events_table=recorder.events_table_name,
                channel=recorder.channel_name,
            )
        if isinstance(view, PostgresLessonsView):
            create_missing(database, view.create_table, view.table_names())
            view.ensure_live_position()
        else:
            create_missing(database, view.create_table, [])
        return view
    except LedgerUnavailable:
        factory.close()
        raise
    except Exception as error:  # the library's and the drivers' errors, as one line
        factory.close()
        reason = one_line(error)
        raise LedgerUnavailable(f"cannot open the lessons read model: {reason}") from None
