"""What every command shares: the `--database-url` and `--json` options, the exit codes,
one place that turns failures into them, JSON files read, progress bars, and JSON output.

Exit codes: 0 done, 1 rejected by the domain (a conflict, an unknown lesson, an export
that differs), 2 bad input or usage (the field named; a malformed database URL too),
3 infrastructure failure. Failures are one line on stderr, never a traceback.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import psycopg
import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from adapters.auth.settings import JwtSettings
from adapters.eventstore import open_ledger
from adapters.keys.keyfile import KeyFileError
from adapters.storage.database import DATABASE_URL_SETTING, DatabaseUrlError
from domain import LessonLedger, LessonNotFound
from domain.errors import (
    DomainRejection,
    InvalidLessonRequest,
    LedgerUnavailable,
    one_line,
)
from projections.lessons import ProjectionError

DONE, REJECTED, BAD_INPUT, INFRASTRUCTURE = 0, 1, 2, 3
JWT_PREFIX = str(JwtSettings.model_config.get("env_prefix"))
INTERRUPTED = 130

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]; "
        f"default ${DATABASE_URL_SETTING}, else sqlite:///./lesson-ledger.db",
        show_default=False,
    ),
]


def flag(name: str, help: str, **options: Any) -> Any:
    """A switch, which takes no value: shown without the `<bool>` typer gives it, which
    reads as if it took one (`--json <bool>`)."""
    return typer.Option(name, help=help, metavar="", **options)


AsJson = Annotated[bool, flag("--json", help="print JSON instead of a table")]

ID_WIDTH = 36
"""A lesson id (a UUID) as text."""


def print_table(table: Table) -> None:
    """Print a table whole: a cell too wide for its column folds onto further lines, never
    cut short with '…' (an operator or auditor reads every id, time and name)."""
    for column in table.columns:
        column.overflow = "fold"
    out.print(table)


def id_column(header: str) -> Column:
    """A table's column of ids, never cut short (`lesson-ledger regenerate ID` takes
    what an operator copies from it): the other columns give way."""
    return Column(header, no_wrap=True, min_width=ID_WIDTH)


out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def login_name() -> str:
    """Who runs the command, as the events record it unless --actor says otherwise."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "cli"


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn the ledger's failures into one line on stderr and the documented exit code."""
    try:
        yield
    except DatabaseUrlError as error:  # a wrong URL is bad input, not an outage
        raise _exit(BAD_INPUT, "invalid", error) from None
    except ValidationError as invalid:  # a setting from the environment
        first = invalid.errors(include_input=False)[0]
        prefix = JWT_PREFIX if invalid.title == JwtSettings.__name__ else "LESSON_LEDGER_"
        name = prefix + "_".join(str(part) for part in first["loc"]).upper()
        message = first["msg"]
        if first["type"] == "value_error":  # our own check's words, without pydantic's prefix
            message = str(first.get("ctx", {}).get("error", message))
        raise _exit(BAD_INPUT, "invalid", f"setting {name}: {message}") from None
    except (LedgerUnavailable, PersistenceError, ProjectionError, KeyFileError) as error:
        raise _exit(INFRASTRUCTURE, "error", _with_hint(error)) from None
    except (psycopg.Error, sqlite3.Error, OSError) as error:
        raise _exit(INFRASTRUCTURE, "error", _with_hint(error)) from None
    except InvalidLessonRequest as invalid:
        raise _exit(BAD_INPUT, "invalid", in_options(invalid)) from None
    except ValueError as error:
        raise _exit(BAD_INPUT, "invalid", error) from None
    except LessonNotFound as missing:
        raise _exit(REJECTED, "not found", missing) from None
    except DomainRejection as error:
        raise _exit(REJECTED, "rejected", error) from None


OPTION_OF = {
    "provider_id": "--provider",
    "school_id": "--school",
    "lesson_date": "--date",
    "time_slot": "--slot",
    "kind": "--kind",
    "request_id": "--request-id",
    "correlation_id": "--correlation-id",
    "actor": "--actor",
    "reason": "--reason",
    "mode": "--mode",
    "batch_id": "--batch-id",
    "date_from": "--from",
    "date_to": "--to",
    "student_id": "STUDENT_ID",
    "details": "--details-json",
}
"""The option (or argument) behind each field the ledger names in a refusal."""
_OPTION_WORDS = (("send kind: ", "give --kind "),)
"""The API's words in the ledger's messages, and the command line's."""


def in_options(invalid: InvalidLessonRequest) -> str:
    """A refusal in the command line's words: each field named as its option (`--slot`,
    not `time_slot`; a field of `--details-json` after it), as the user typed it."""
    named = []
    for error in invalid.errors:
        field, message = error["field"], error["message"]
        head, _, rest = field.partition(".")
        option = OPTION_OF.get(head)
        if option is not None:
            field = f"{option}: {rest}" if rest else option
        for api, cli in _OPTION_WORDS:
            message = message.replace(api, cli)
        named.append(f"{field}: {message}")
    return "; ".join(named)


OWNER_ONLY = (
    "the connecting role lacks a right this command needs (`projections rebuild` and "
    "`students encrypt-existing` run as the role that owns the schema; the serving role's "
    'rights: the README\'s "Least privilege")'
)


def _with_hint(error: BaseException) -> str:
    """The error's line; for PostgreSQL's "permission denied", with what to do about it."""
    text = one_line(error)
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, psycopg.errors.InsufficientPrivilege):
            return f"{text}: {OWNER_ONLY}"
        cause = cause.__cause__ or cause.__context__
    return text


def _exit(code: int, label: str, error: object) -> typer.Exit:
    colour = "red" if code in (BAD_INPUT, INFRASTRUCTURE) else "yellow"
    text = one_line(error) if isinstance(error, BaseException) else str(error)
    err.print(f"[{colour}]{label}:[/{colour}] {text}")
    return typer.Exit(code)


@contextmanager
def opened_ledger(database_url: str | None) -> Iterator[LessonLedger]:
    """The ledger for one command, closed afterwards; failures become exit codes."""
    with exit_codes():
        ledger = open_ledger(database_url)
        try:
            yield ledger
        finally:
            ledger.close()


def bad_input(field: str, message: str) -> typer.Exit:
    """One line naming the bad option or field, and exit code 2 (raise the result)."""
    err.print(f"[red]invalid:[/red] {field}: {message}")
    return typer.Exit(BAD_INPUT)


def read_json(option: str, source: str) -> Any:
    """JSON from a file, or from stdin for `-`; one that cannot be read is exit 2, naming
    the option and what is wrong with it."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise bad_input(option, f"cannot read {source!r}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        where = f"{error.reason} at byte {error.start}"
        raise bad_input(option, f"is not UTF-8 text: {where}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise bad_input(option, "is nested too deeply to read") from None
    except ValueError as error:
        raise bad_input(option, f"is not JSON: {error}") from None


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


def progress_bar(
    *extra: ProgressColumn, remaining: bool = True, transient: bool = False
) -> Progress:
    """A progress bar on stderr: what, how far, `extra` columns, time spent (and left);
    `transient` ones vanish when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        *([TimeRemainingColumn()] if remaining else []),
        console=err,
        transient=transient,
    )


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
