"""What the ledger's commands (`request`, `batch`, `show`, `history`, `report`, `export`,
`verify-export`, `import`) share: the `--database-url` option, the ledger opened for one
command with its failures turned into the documented exit codes, and JSON output.

Exit codes: 0 done, 1 rejected by the domain (a conflict, an unknown lesson, an export
that differs), 2 bad input or usage (the field named; a malformed database URL too),
3 infrastructure failure. Failures are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console

from adapters.database import DATABASE_URL_SETTING, open_ledger
from domain import LessonLedger, LessonNotFound

DONE, REJECTED, BAD_INPUT, INFRASTRUCTURE = 0, 1, 2, 3

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]; "
        f"default ${DATABASE_URL_SETTING}, else sqlite:///./lesson-ledger.db",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def failures_as_exit_codes() -> Iterator[None]:
    """adapters.cli's exit codes, plus the case it leaves to its commands: an unknown
    lesson (1)."""
    # Imported here: adapters.cli imports the modules that use this one.
    from adapters.cli import exit_codes

    with exit_codes():
        try:
            yield
        except LessonNotFound as missing:
            err.print(f"[yellow]not found:[/yellow] {missing}")
            raise typer.Exit(REJECTED) from None


@contextmanager
def opened_ledger(database_url: str | None) -> Iterator[LessonLedger]:
    """The ledger for one command, closed afterwards; failures become exit codes."""
    with failures_as_exit_codes():
        ledger = open_ledger(database_url)
        try:
            yield ledger
        finally:
            ledger.close()


def bad_input(field: str, message: str) -> typer.Exit:
    """One line naming the bad option or field, and exit code 2 (raise the result)."""
    err.print(f"[red]invalid:[/red] {field}: {message}")
    return typer.Exit(BAD_INPUT)


def parse_timestamp(field: str, text: str | None) -> datetime | None:
    """An ISO timestamp (or date) from an option; without a zone it is taken as UTC."""
    if text is None:
        return None
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad_input(
            field, f"is not an ISO timestamp such as 2025-09-05T08:30:00Z: {text!r}"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def jsonable(value: object) -> Any:
    """`json.dumps`'s default for what the ledger returns: dates, times, UUIDs, dataclasses."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(data: object) -> None:
    """JSON on stdout, as machines read it (no colour, no wrapping)."""
    typer.echo(json.dumps(data, default=jsonable, indent=2))
