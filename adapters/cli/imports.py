"""`lesson-ledger import`: the old lessons table into the ledger, from a CSV export or
straight from PostgreSQL, with a progress bar and a summary of every case.

Exit codes: 0 done (rows that could not be imported are listed, not fatal: fix them and
run it again; what was imported is replayed), 2 bad input (the option named),
3 the ledger's or the source's database cannot be reached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adapters.cli.options import (
    AsJson,
    DatabaseUrl,
    bad_input,
    exit_codes,
    flag,
    id_column,
    opened_ledger,
    print_json,
    print_table,
    progress_bar,
)
from adapters.counts import counted
from adapters.legacy.tables import (
    PAGE_SIZE,
    CsvLessons,
    ImportCase,
    ImportSummary,
    PostgresLessons,
    column_map,
)
from adapters.storage.database import Database

import_commands = typer.Typer()


@import_commands.command("import")
def import_lessons(
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="a CSV export of the table, with a header line")
    ] = None,
    postgres_table: Annotated[
        str | None,
        typer.Option("--postgres-table", help="TABLE or SCHEMA.TABLE to read from PostgreSQL"),
    ] = None,
    source_url: Annotated[
        str | None,
        typer.Option(
            "--source-url",
            help="postgresql://... holding --postgres-table (default: the ledger's database)",
        ),
    ] = None,
    mappings: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="NEW=OLD: read the ledger's field NEW from column OLD (repeatable), "
            "e.g. --map time_slot=slot",
        ),
    ] = None,
    dry_run: Annotated[
        bool, flag("--dry-run", help="decide every row, print it, write nothing")
    ] = False,
    actor: Annotated[str, typer.Option("--actor", help="recorded as who imported")] = "import",
    batch_id: Annotated[
        str | None,
        typer.Option("--batch-id", help="correlation id of this run (default: import-<time>)"),
    ] = None,
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, max=PAGE_SIZE, help="rows per transaction")
    ] = PAGE_SIZE,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Bring an existing lessons table (ai_generated_lessons) into the ledger.

    Reads the columns id, provider_id, school_id, lesson_date, time_slot, content,
    created_at, updated_at (rename others with --map); prompt and session_data are never
    read: they may hold students' names. Rows stream in pages of 500, each decided by the
    ledger: imported; already imported (running it again adds nothing); `structured` and
    on-demand-* slots become on-demand lessons; a start time alone (08:00) is imported
    and flagged; a row whose key another row or lesson holds is a collision (reported with
    both ids, never merged); a row without a school is refused. Try --dry-run first.

    Example: lesson-ledger import --postgres-table public.ai_generated_lessons
    --source-url postgresql://app@db.internal/app --dry-run
    """
    if (csv_file is None) == (postgres_table is None):
        raise bad_input("--csv/--postgres-table", "give exactly one source")
    if source_url is not None and postgres_table is None:
        raise bad_input("--source-url", "only goes with --postgres-table")
    with exit_codes():  # a bad source or --map: exit 2, the option named
        columns = column_map(mappings or [])
        if csv_file is not None:
            source: CsvLessons | PostgresLessons = CsvLessons(csv_file, columns)
            name = str(csv_file)
        else:
            assert postgres_table is not None
            database = Database.from_url(source_url or database_url, companions=False)
            if database.kind != "postgresql":
                raise bad_input("--source-url", "--postgres-table reads PostgreSQL: give its URL")
            source = PostgresLessons(database, postgres_table, columns)
            name = source.name
        run_id = batch_id or f"import-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        summary = ImportSummary(dry_run=dry_run)
        with opened_ledger(database_url) as ledger, progress_bar(transient=True) as progress:
            task = progress.add_task("dry run" if dry_run else "import", total=source.count())
            for page in source.pages(page_size):
                result = ledger.import_lessons(page, actor=actor, batch_id=run_id, dry_run=dry_run)
                summary.add(page, result)
                progress.advance(task, len(page))
    if as_json:
        print_json({"source": name, "batch_id": run_id, **summary.as_json()})
        return
    _print_summary(summary, name, run_id)


def _print_summary(summary: ImportSummary, source: str, run_id: str) -> None:
    verb = "would be imported (dry run: nothing written)" if summary.dry_run else "imported"
    table = Table("", "rows", title=f"{source}: {counted(summary.rows, 'row')}, batch {run_id}")
    for label, count in (
        (verb, summary.imported),
        ("already imported (replayed)", summary.replayed),
        ("of these, on-demand (structured / on-demand-*)", len(summary.on_demand)),
        ("of these, start time only (flagged for review)", len(summary.start_only)),
        ("collisions (not merged)", len(summary.collisions)),
        ("missing school (refused)", len(summary.missing_school)),
        ("other invalid (refused)", len(summary.invalid)),
    ):
        table.add_row(label, str(count))
    print_table(table)
    for title, cases in (
        ("On-demand lessons", summary.on_demand),
        ("Start time only, flagged", summary.start_only),
        ("Collisions", summary.collisions),
        ("Missing school", summary.missing_school),
        ("Other invalid rows", summary.invalid),
    ):
        _print_cases(title, cases)


def _print_cases(title: str, cases: list[ImportCase]) -> None:
    if not cases:
        return
    table = Table(
        "legacy id",
        "school date slot",
        "what",
        id_column("lesson id"),
        title=f"{title} ({len(cases)})",
    )
    for case in cases:
        table.add_row(case.legacy_id, case.key, case.detail, case.lesson_id or "")
    print_table(table)
