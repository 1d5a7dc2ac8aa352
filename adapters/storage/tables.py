"""Creating the ledger's tables on start: only those missing, one process at a time, and
not at all when table creation is off (then a missing table is one line at start)."""

from __future__ import annotations

from collections.abc import Callable

from adapters.storage.database import Database


def create_missing(database: Database, create: Callable[[], None], names: list[str]) -> None:
    """Run `create` (idempotent DDL) under the table-creation lock when a table of `names`
    (in the ledger's schema) is missing. Tables that exist are not created again, so a
    role without the right to create them (the serving role) opens them; with table
    creation off a missing one raises LedgerUnavailable naming it. SQLite: `create`
    always runs (under the lock file)."""
    if database.kind == "sqlite":
        with database.creating_tables():
            create()
        return
    with database.connect() as conn:
        missing = database.missing_tables(conn, names)
    if not missing:
        return
    if not database.create_tables:
        raise database.missing_tables_error(missing)
    with database.creating_tables():
        create()
