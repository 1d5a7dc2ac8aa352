"""The old `ai_generated_lessons` table, brought into the ledger a page at a time: read
from a CSV export or straight from a PostgreSQL table, and every row's outcome sorted
into the cases the incident report asked about.

Rows are streamed (a csv reader; a server-side cursor on PostgreSQL) in pages of at most
500, each page one `LessonLedger.import_lessons` call, so the table is never in memory.
Only the columns the ledger imports are read: `prompt` and `session_data` may hold
students' names and are never selected, whatever `--map` says.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from adapters.storage.database import Database
from domain import BatchResult, InvalidLessonRequest, LedgerUnavailable, LessonConflict
from domain.keys import parse_legacy_key

PAGE_SIZE = 500
"""Rows per `import_lessons` call: the ledger's batch limit."""
FIELDS = (
    "id",
    "provider_id",
    "school_id",
    "lesson_date",
    "time_slot",
    "content",
    "created_at",
    "updated_at",
)
REQUIRED = ("id", "provider_id", "school_id", "lesson_date", "time_slot")
NEVER_IMPORTED = ("prompt", "session_data")
ON_DEMAND_FLAGS = ("structured_slot", "on_demand_slot")
START_ONLY_FLAG = "start_only_slot"


class ImportSourceError(ValueError):
    """The source or the mapping cannot be read as a lessons table; names the option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def column_map(mappings: Sequence[str]) -> dict[str, str]:
    """`--map new=old` options as {ledger field: source column}; every other field is
    read from the column of its own name."""
    columns = {name: name for name in FIELDS}
    for mapping in mappings:
        new, sep, old = mapping.partition("=")
        new, old = new.strip(), old.strip()
        if not sep or not new or not old:
            raise ImportSourceError(
                "--map", f"write NEW=OLD, e.g. time_slot=slot (got {mapping!r})"
            )
        if new not in FIELDS:
            raise ImportSourceError("--map", f"{new!r} is not a field the ledger imports: {FIELDS}")
        if old.lower() in NEVER_IMPORTED:
            raise ImportSourceError(
                "--map", f"{old!r} is never imported: it may hold students' names"
            )
        columns[new] = old
    return columns


def _selected(available: Sequence[str], columns: Mapping[str, str], option: str) -> dict[str, str]:
    """The fields to read, each from its source column; a required one must be there."""
    present = set(available)
    missing = [f for f in REQUIRED if columns[f] not in present]
    if missing:
        absent = ", ".join(repr(columns[f]) for f in missing)
        hint = " ".join(f"--map {f}=COLUMN" for f in missing)
        raise ImportSourceError(
            option,
            f"has no column {absent}: name the columns to read with {hint} "
            f"(its columns: {', '.join(available)})",
        )
    return {f: column for f, column in columns.items() if column in present}


class CsvLessons:
    """Rows of a CSV export of the lessons table (with a header line). CSV has no NULL:
    an empty cell is NULL, as PostgreSQL's `COPY ... CSV` writes it. A byte-order mark
    (spreadsheets write one) is skipped."""

    def __init__(self, path: Path, columns: Mapping[str, str]) -> None:
        self.path = path
        try:
            with path.open(newline="", encoding="utf-8-sig") as file:
                header = next(csv.reader(file), [])
        except OSError as error:
            raise ImportSourceError(
                "--csv", f"cannot read {str(path)!r}: {error.strerror}"
            ) from None
        except (UnicodeDecodeError, csv.Error) as error:
            raise ImportSourceError("--csv", f"{str(path)!r} is not UTF-8 CSV: {error}") from None
        if not header:
            raise ImportSourceError("--csv", f"{str(path)!r} is empty: not even a header line")
        self.fields = _selected(header, columns, "--csv")

    def count(self) -> int:
        """How many rows (a quick pass, for the progress bar; constant memory)."""
        with self.path.open(newline="", encoding="utf-8-sig") as file:
            return max(sum(1 for _ in csv.reader(file)) - 1, 0)

    def pages(self, size: int = PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        with self.path.open(newline="", encoding="utf-8-sig") as file:
            page: list[dict[str, Any]] = []
            try:
                for row in csv.DictReader(file):
                    page.append({f: (row.get(column) or None) for f, column in self.fields.items()})
                    if len(page) == size:
                        yield page
                        page = []
            except csv.Error as error:
                raise ImportSourceError("--csv", f"is not valid CSV: {error}") from None
            if page:
                yield page


class PostgresLessons:
    """Rows of a PostgreSQL table, read through a server-side cursor: the server sends
    one page at a time, in the order of the legacy id."""

    def __init__(self, database: Database, table: str, columns: Mapping[str, str]) -> None:
        self.database = database
        parts = [part.strip() for part in table.split(".")]
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ImportSourceError(
                "--postgres-table", f"write TABLE or SCHEMA.TABLE, not {table!r}"
            )
        if len(parts) == 1:
            parts.insert(0, database.schema)
        self.table = sql.Identifier(*parts)
        self.name = ".".join(parts)
        with self._reading() as conn:
            described = conn.execute(
                sql.SQL("SELECT * FROM {} LIMIT 0").format(self.table)
            ).description
        self.fields = _selected([c.name for c in described or []], columns, "--postgres-table")

    def count(self) -> int:
        with self._reading() as conn:
            found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table)).fetchone()
        return int(found[0]) if found else 0

    def pages(self, size: int = PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        names = list(self.fields)
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(self.fields[name]) for name in names),
            self.table,
            sql.Identifier(self.fields["id"]),
        )
        with self._reading() as conn, conn.cursor(name="lesson_ledger_import") as cursor:
            cursor.itersize = size
            cursor.execute(query)
            while rows := cursor.fetchmany(size):
                yield [dict(zip(names, row, strict=True)) for row in rows]

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A read-only transaction on the source (a server-side cursor needs one), with
        the driver's errors as the CLI's answers: a missing table is bad input, the rest
        an infrastructure failure."""
        conn = self.database.connect(autocommit=False)
        conn.read_only = True
        # JSON columns as their text, as a CSV gives it: decoded here, a JSON string
        # would be taken for text to decode, and refused as "not JSON".
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)
        try:
            with conn:
                yield conn
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            raise ImportSourceError(
                "--postgres-table", f"there is no table {self.name} in {self.database.dbname}"
            ) from None
        except psycopg.errors.InsufficientPrivilege as error:
            raise ImportSourceError("--postgres-table", _one_line(error)) from None
        except psycopg.Error as error:
            raise LedgerUnavailable(f"reading {self.name} failed: {_one_line(error)}") from None


@dataclass(frozen=True)
class ImportCase:
    """One row the summary lists: its legacy id, its key as the table had it, and why;
    the lesson's id when it has one (`show` and `history` take it)."""

    legacy_id: str
    key: str
    detail: str
    lesson_id: str | None = None


@dataclass
class ImportSummary:
    """Every row's outcome, sorted into the incident report's cases."""

    dry_run: bool = False
    rows: int = 0
    imported: int = 0
    replayed: int = 0
    on_demand: list[ImportCase] = field(default_factory=list)
    start_only: list[ImportCase] = field(default_factory=list)
    collisions: list[ImportCase] = field(default_factory=list)
    missing_school: list[ImportCase] = field(default_factory=list)
    invalid: list[ImportCase] = field(default_factory=list)
    # Dry run only: which legacy row would have claimed each lesson in an earlier page,
    # since nothing was written for the next page's rows to collide with.
    _claimed: dict[UUID, str] = field(default_factory=dict)

    def add(self, page: Sequence[Mapping[str, Any]], result: BatchResult) -> None:
        """Sort one page's results (in the page's order) into the cases."""
        for row, item in zip(page, result.items, strict=True):
            self.rows += 1
            legacy_id, key = str(row.get("id")), _key_text(row)
            error = item.error
            if item.outcome == "accepted" and self.dry_run and item.lesson_id is not None:
                earlier = self._claimed.setdefault(item.lesson_id, legacy_id)
                if earlier != legacy_id:
                    detail = f"collides with legacy row {earlier}"
                    self.collisions.append(ImportCase(legacy_id, key, detail, str(item.lesson_id)))
                    continue
            if item.outcome in ("accepted", "replayed"):
                if item.outcome == "accepted":
                    self.imported += 1
                else:
                    self.replayed += 1
                self._flagged(row, legacy_id, key, str(item.lesson_id))
            elif isinstance(error, InvalidLessonRequest):
                fields = {e["field"]: e["message"] for e in error.errors}
                case = ImportCase(legacy_id, key, str(error))
                if fields.get("school_id", "").startswith("is missing"):
                    self.missing_school.append(case)
                else:
                    self.invalid.append(case)
            else:
                lesson = str(item.lesson_id) if item.lesson_id else None
                self.collisions.append(ImportCase(legacy_id, key, _collision(error), lesson))

    def _flagged(self, row: Mapping[str, Any], legacy_id: str, key: str, lesson: str) -> None:
        flags = parse_legacy_key(
            row.get("provider_id"),
            row.get("school_id"),
            row.get("lesson_date"),
            row.get("time_slot"),
            legacy_id,
        )[1]
        if any(flag in ON_DEMAND_FLAGS for flag in flags):
            slot = row.get("time_slot") or "(none)"
            detail = f"slot {slot!r}: an on-demand lesson"
            self.on_demand.append(ImportCase(legacy_id, key, detail, lesson))
        if START_ONLY_FLAG in flags:
            detail = "start time only: imported as it is, flagged for review"
            self.start_only.append(ImportCase(legacy_id, key, detail, lesson))

    def as_json(self) -> dict[str, Any]:
        cases = ("on_demand", "start_only", "collisions", "missing_school", "invalid")
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "imported": self.imported,
            "replayed": self.replayed,
            **{name: [vars(case) for case in getattr(self, name)] for name in cases},
        }


def _key_text(row: Mapping[str, Any]) -> str:
    parts = (row.get(name) for name in ("school_id", "lesson_date", "time_slot"))
    return " ".join("NULL" if part is None else str(part) for part in parts)


def _collision(error: object) -> str:
    """Who holds the lesson a row collides with: another legacy row, or a request."""
    if isinstance(error, LessonConflict) and error.holder is not None:
        holder = error.holder.request_id
        if holder.startswith("import-"):
            return f"collides with legacy row {holder.removeprefix('import-')}"
        return f"collides with request {holder} by {error.holder.actor} ({error.holder.status})"
    return str(error) if error is not None else "collides with another lesson"


def _one_line(error: Exception) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
