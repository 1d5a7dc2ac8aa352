"""`lesson-ledger lessons`: lessons from the read model, filtered and a page at a time, as
`GET /v1/lessons` lists them (say, the failed lessons of a day, to regenerate them).

Content is not listed (`show` opens one lesson's). The read model is kept current by a
running server or `projections follow`; when it is behind the log, the command says so
on stderr, since lessons changed since are not in the list yet. In a terminal too narrow
for the whole table, columns give way (`GIVES_WAY`), and it says which on stderr; in one
narrower still (80 columns), the borders go too (`COMPACT`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.measure import Measurement
from rich.table import Column, Table

from adapters.cli.options import (
    OPTION_OF,
    AsJson,
    DatabaseUrl,
    bad_input,
    err,
    exit_codes,
    id_column,
    out,
    print_json,
    print_table,
)
from adapters.read_model import open_read_model
from projections.lessons import LessonRow
from projections.read_model import MAX_LIMIT, InvalidLessonQuery, LessonPage

list_commands = typer.Typer()


@list_commands.command()
def lessons(
    provider: Annotated[str | None, typer.Option("--provider", help="provider id")] = None,
    school: Annotated[str | None, typer.Option("--school", help="school id")] = None,
    date_from: Annotated[
        str | None, typer.Option("--from", help="lessons dated on or after, YYYY-MM-DD")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="lessons dated on or before, YYYY-MM-DD")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="requested, generated, failed or cancelled")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help=f"lessons per page, 1 to {MAX_LIMIT}")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="the next page, as the last one said")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Lessons from the read model, by date and slot: id, key, status, attempt, request.

    Each filter narrows the list; a full page ends with the --cursor of the next.

    Example: lesson-ledger lessons --school school-1 --from 2025-09-01 --to 2025-09-05
    --status failed
    """
    with exit_codes():
        read_model = open_read_model(database_url)
        try:
            position, head = read_model.position(), read_model.head()
            page = read_model.list_lessons(
                provider_id=provider,
                school_id=school,
                date_from=date_from,
                date_to=date_to,
                status=status,
                limit=limit,
                cursor=cursor,
            )
        except InvalidLessonQuery as invalid:
            option = OPTION_OF.get(invalid.field, f"--{invalid.field}")
            raise bad_input(option, invalid.message) from None
        finally:
            read_model.close()
    if as_json:
        print_json(_page_json(page, position, head))
    else:
        _print_page(page)
    if position < head:
        err.print(
            f"the read model is at position {position} of {head}: lessons changed since are "
            "not listed yet (a running server keeps it current; or run "
            "`lesson-ledger projections catch-up`)"
        )


def _row_json(row: LessonRow) -> dict[str, Any]:
    listed = row.as_json()
    del listed["content"]  # made from students' details: `show` opens one lesson's
    return listed


def _page_json(page: LessonPage, position: int, head: int) -> dict[str, Any]:
    return {
        "items": [_row_json(row) for row in page.items],
        "next_cursor": page.next_cursor,
        "position": position,
        "head": head,
    }


def _table(rows: Sequence[LessonRow], left_out: tuple[str, ...], *, compact: bool = False) -> Table:
    """The page as a table, without the columns left out; `COMPACT`, if asked."""
    columns: list[tuple[str | Column, Callable[[LessonRow], str]]] = [
        (id_column("lesson id"), lambda row: str(row.lesson_id)),
        ("provider", lambda row: row.provider_id),
        ("school", lambda row: row.school_id),
        (Column("date", no_wrap=True, min_width=10), lambda row: row.lesson_date.isoformat()),
        (Column("slot", no_wrap=True, min_width=11), lambda row: row.time_slot),
        (Column("status", no_wrap=True, min_width=9), lambda row: row.status),
        (Column("attempt", no_wrap=True, min_width=7), lambda row: str(row.attempt)),
        ("request", lambda row: row.request_id or ""),
        ("why", lambda row: row.failure_reason or ""),
    ]
    kept = [(column, cell) for column, cell in columns if column not in left_out]
    table = Table(*(column for column, _ in kept), **(COMPACT if compact else {}))
    for row in rows:
        table.add_row(*(cell(row) for _, cell in kept))
    return table


def _too_wide(table: Table) -> bool:
    """Whether the table is wider than the terminal even with its text wrapped (measured
    as if the terminal were wide: a measure never exceeds the width it is given)."""
    unbounded = out.options.update(width=10_000)
    return Measurement.get(out, unbounded, table).minimum > out.width


GIVES_WAY = ("provider", "why", "request", "school")
"""Columns left out, in this order, when the terminal is too narrow for the table whole:
rich would squeeze them to nothing, with no mark (`--json` has every field)."""

COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": 0}
"""The table without borders and padding, a space between columns: the id, date, slot,
status and attempt in 77 characters, where the boxed table takes 89."""


def _print_page(page: LessonPage) -> None:
    if not page.items:
        out.print("no lessons match")
    else:
        left_out: tuple[str, ...] = ()
        table = _table(page.items, left_out)
        while len(left_out) < len(GIVES_WAY) and _too_wide(table):
            left_out = GIVES_WAY[: len(left_out) + 1]
            table = _table(page.items, left_out)
        if _too_wide(table):
            table = _table(page.items, left_out, compact=True)
        print_table(table)
        if left_out:
            err.print(
                f"left out to fit {out.width} columns: {', '.join(left_out)} "
                "(a wider terminal, or --json, has them)"
            )
    if page.next_cursor is not None:
        out.print(f"more: --cursor {page.next_cursor}")
