"""`lesson-ledger db migrate`: make the ledger's schema objects as the role that owns them.

Exit codes: 0 done, 2 bad usage (a malformed database URL), 3 infrastructure failure (one
clear line on stderr, e.g. no right to create a table). Prints one line per schema, table
and function: created, replaced (an earlier release's) or already there.
"""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.cli.options import DatabaseUrl, bad_input, exit_codes, out
from adapters.migrate import Step, for_migration, migrate
from adapters.postgres.rights import grant, role_exists
from adapters.storage.database import redacted

db_app = typer.Typer(help="The ledger's tables: migrate.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(
    database_url: DatabaseUrl = None,
    grant_to: Annotated[
        str | None,
        typer.Option(
            "--grant-to",
            metavar="ROLE",
            help="then grant this role the serving role's rights (PostgreSQL)",
        ),
    ] = None,
) -> None:
    """Create every table and function the ledger uses that is missing, and say what was
    done; safe to run again (idempotent).

    Run it as the role that owns the schema (default URL: $LESSON_LEDGER_DIRECT_DATABASE_URL,
    else $LESSON_LEDGER_DATABASE_URL); the serving role then needs only the GRANTs the
    README lists (`--grant-to ROLE` grants them), with LESSON_LEDGER_CREATE_TABLES=false.

    Example: lesson-ledger db migrate --database-url 'postgresql://ledger_owner@db/app?schema=ledger'
    --grant-to ledger_app
    """

    def show(step: Step) -> None:
        out.print(f"{step.kind} {step.name}: {step.outcome}")

    with exit_codes():
        database = for_migration(database_url)
        if grant_to is not None and database.kind != "postgresql":
            raise bad_input("--grant-to", "roles are PostgreSQL's: SQLite has none")
        if grant_to is not None and not role_exists(database, grant_to):
            # Before migrating: it was an error after it, as if the database had failed.
            raise bad_input("--grant-to", f"there is no role {grant_to!r} (CREATE ROLE it first)")
        out.print(f"migrating {redacted(database.url)}")
        steps = migrate(database, on_step=show)
    created = sum(1 for step in steps if step.outcome != "already there")
    out.print(f"done: {created} created or replaced, {len(steps) - created} already there")
    if grant_to is not None:
        with exit_codes():
            count = grant(database, grant_to)
        out.print(f"granted {grant_to!r} the serving role's rights ({count} statements)")
