"""`lesson-ledger report conflicts | export | verify-export`: the incident report as a
query, and the audit trail as JSON Lines checked back against the ledger.

Exit codes: 0 done, 1 an export differs from the ledger, 2 bad input (the option named),
3 the database cannot be reached. Tables and JSON on stdout; progress on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.table import Table

from adapters.cli.options import (
    DONE,
    REJECTED,
    AsJson,
    DatabaseUrl,
    bad_input,
    err,
    exit_codes,
    opened_ledger,
    out,
    parse_timestamp,
    print_json,
    progress_bar,
)
from adapters.eventstore import event_log
from adapters.storage.database import Database
from adapters.storage.refused_requests import SqlInvalidRequestLog
from projections.audit_trail import STUDENT_DATA, TrailFilter, export_line, trail, verify
from projections.conflict_report import ConflictReport, conflict_report

audit_commands = typer.Typer()
report_app = typer.Typer(
    help="Reports over the whole ledger: `report conflicts`.", no_args_is_help=True
)
audit_commands.add_typer(report_app, name="report")

Provider = Annotated[str | None, typer.Option("--provider", help="only this provider's lessons")]
School = Annotated[str | None, typer.Option("--school", help="only this school's lessons")]
Since = Annotated[
    str | None, typer.Option("--since", help="only events recorded from this ISO time (UTC)")
]


@report_app.command("conflicts")
def report_conflicts(
    since: Since = None,
    until: Annotated[
        str | None, typer.Option("--until", help="only events recorded up to this ISO time")
    ] = None,
    provider: Provider = None,
    school: School = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Why requests were turned away, and by whom: the incident report as a query.

    Counts every rejected attempt by cause (slot already held, wrong state, stale
    generation, idempotency mismatch, missing time slot, missing school, other invalid
    input), lists the most contested slots, the batches that collided with each other
    and how far apart in time, and the keys that only became equal after
    canonicalisation (8:30-9:00 and 08:30 - 09:00).

    Example: lesson-ledger report conflicts --since 2025-09-01 --school school-1 --json
    """
    end = parse_timestamp("--until", until)
    only = _filter(provider, school, since)  # the key's parts checked, each field named
    with opened_ledger(database_url) as ledger:
        refused = SqlInvalidRequestLog(Database.from_url(database_url))
        try:
            report = conflict_report(
                event_log(ledger),
                refused.read(only.since, end),
                since=only.since,
                until=end,
                provider_id=only.provider_id,
                school_id=only.school_id,
            )
        finally:
            refused.close()
    if as_json:
        print_json(report.as_json())
        return
    _print_report(report)


@audit_commands.command()
def export(
    provider: Provider = None,
    school: School = None,
    since: Since = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write to this file (default: stdout)"),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The audit trail as JSON Lines: one event per line, with its position.

    Each line: position (the notification id), lesson_id, version, event, recorded_at,
    request_id, actor, correlation_id, source, as_sent (the key as the caller spelled
    it) and data (what changed). Students' sensitive part is never exported: `students`
    is a count. Streams the log a page at a time, so a large export uses constant memory.
    Check it later with verify-export (with the same filters).

    Example: lesson-ledger export --school school-1 --since 2025-09-01 -o audit.jsonl
    """
    only = _filter(provider, school, since)
    with opened_ledger(database_url) as ledger, _destination(output) as sink:
        log = event_log(ledger)
        head = log.head()
        with progress_bar(remaining=False, transient=True) as progress:
            task = progress.add_task("export", total=head)
            lines = 0
            for record in trail(log, only, progress=lambda at: progress.update(task, completed=at)):
                sink.write(export_line(record))
                sink.write("\n")
                lines += 1
    err.print(f"exported {lines} events (log head {head})" + (f" to {output}" if output else ""))


@audit_commands.command("verify-export")
def verify_export(
    file: Annotated[Path, typer.Argument(help="a file written by export")],
    provider: Provider = None,
    school: School = None,
    since: Since = None,
    except_student_data: Annotated[
        bool,
        typer.Option(
            "--except-student-data",
            help="let lesson content differ (sealed since, by students encrypt-existing)",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Check an export against the ledger; exit 1 when anything differs.

    Every line must be the ledger's event at its position with the same content, and
    no event up to the export's last position may be missing (give the filters the
    export was made with). Reports each changed, unknown or missing line.

    Example: lesson-ledger verify-export audit.jsonl --school school-1 --since 2025-09-01
    """
    only = _filter(provider, school, since)
    try:
        source = file.open(encoding="utf-8")
    except OSError as error:
        raise bad_input("FILE", f"cannot read {str(file)!r}: {error.strerror or error}") from None
    with source, opened_ledger(database_url) as ledger:
        ignored = STUDENT_DATA if except_student_data else frozenset()
        found = verify(source, event_log(ledger), only, ignored)
    if as_json:
        print_json(
            {
                "lines": found.lines,
                "last_position": found.last_position,
                "ok": not found.differences,
                "differences": [vars(d) for d in found.differences],
            }
        )
    else:
        for difference in found.differences:
            out.print(str(difference))
        verdict = "matches the ledger" if not found.differences else "DIFFERS from the ledger"
        out.print(
            f"{file}: {found.lines} lines up to position {found.last_position}: {verdict}"
            + (f" ({len(found.differences)} differences)" if found.differences else "")
        )
    if found.differences:
        raise typer.Exit(REJECTED)


def _filter(provider: str | None, school: str | None, since: str | None) -> TrailFilter:
    start = parse_timestamp("--since", since)
    with exit_codes():  # a bad provider or school id: exit 2, the field named
        return TrailFilter(provider_id=provider, school_id=school, since=start)


@contextmanager
def _destination(output: Path | None) -> Iterator[IO[str]]:
    if output is None:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`export | head`): done, not a failure. Point stdout
            # at /dev/null so the interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(DONE) from None
        return
    try:
        sink = output.open("w", encoding="utf-8")
    except OSError as error:
        raise bad_input("--output", f"cannot write {str(output)!r}: {error.strerror}") from None
    with sink:
        yield sink


def _print_report(report: ConflictReport) -> None:
    causes = Table("cause", "rejected attempts", title="Why requests were turned away")
    for cause, count in report.causes.items():
        causes.add_row(cause.replace("_", " "), str(count))
    out.print(causes)

    contested = Table(
        "lesson id",
        "provider",
        "school",
        "date",
        "slot",
        "rejections",
        "requesters",
        title="Most contested slots",
    )
    for slot in report.contested:
        contested.add_row(
            str(slot.lesson_id),
            slot.provider_id,
            slot.school_id,
            str(slot.lesson_date),
            slot.time_slot,
            str(slot.rejections),
            ", ".join(sorted(slot.requesters)),
        )
    _print_or_none(contested, report.contested)

    collisions = Table(
        "batch turned away",
        "batch holding the slot",
        "collisions",
        "gap (seconds)",
        title="Batches that collided with each other",
    )
    for collision in report.collisions:
        gap = f"{collision.min_gap_seconds:.3f} .. {collision.max_gap_seconds:.3f}"
        collisions.add_row(collision.batch, collision.holder_batch, str(collision.count), gap)
    _print_or_none(collisions, report.collisions)

    spellings = Table("lesson", "spellings sent", title="Keys equal only after canonicalisation")
    for clash in report.spellings:
        key = f"{clash.school_id} {clash.lesson_date} {clash.time_slot}\n{clash.lesson_id}"
        spellings.add_row(key, _spellings(clash.spellings))
    _print_or_none(spellings, report.spellings)


def _spellings(spellings: list[dict[str, str]]) -> str:
    """Each spelling, by the parts in which the spellings differ."""
    parts = sorted({part for sent in spellings for part in sent})
    differing = [p for p in parts if len({sent.get(p) for sent in spellings}) > 1] or parts
    return "\n".join(
        ", ".join(f"{part}={sent.get(part)!r}" for part in differing) for sent in spellings
    )


def _print_or_none(table: Table, rows: list[Any]) -> None:
    if rows:
        out.print(table)
    else:
        out.print(f"{table.title}: none")
