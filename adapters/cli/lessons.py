"""`lesson-ledger request | batch | show | history`: lesson commands and a lesson's audit
trail from the command line. Tables for people, `--json` for machines.

Exit codes: 0 done (replayed included), 1 rejected by the domain (a conflict names the
holder; an atomic batch that wrote nothing; an unknown lesson), 2 bad input (every bad
field named), 3 the database cannot be reached.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from adapters.cli.batch_file import BatchFileError, read_batch
from adapters.cli.options import (
    REJECTED,
    AsJson,
    DatabaseUrl,
    bad_input,
    exit_codes,
    id_column,
    login_name,
    opened_ledger,
    out,
    parse_timestamp,
    print_json,
    print_table,
    read_json,
)
from domain import (
    BatchItemResult,
    BatchResult,
    CommandResult,
    HistoryEntry,
    InvalidLessonRequest,
    LessonConflict,
    LessonHistory,
    LessonNotFound,
    LessonState,
    lesson_id_for,
)

lessons_commands = typer.Typer()

Provider = Annotated[str | None, typer.Option("--provider", help="provider id (a UUID)")]
School = Annotated[str | None, typer.Option("--school", help="school id")]
LessonDate = Annotated[str | None, typer.Option("--date", help="lesson date, YYYY-MM-DD")]
Slot = Annotated[
    str | None,
    typer.Option("--slot", help="time slot such as 08:30-09:00 (any accepted spelling)"),
]
LessonIdArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="LESSON_ID", help="the lesson id; or give --provider --school --date --slot"
    ),
]


Actor = Annotated[
    str,
    typer.Option(
        "--actor",
        help="who is asking, as the events record it",
        default_factory=login_name,
        show_default="your login name",
    ),
]


@lessons_commands.command()
def request(
    provider: Annotated[str, typer.Option("--provider", help="provider id (a UUID)")],
    school: Annotated[str, typer.Option("--school", help="school id")],
    date: Annotated[str, typer.Option("--date", help="lesson date, YYYY-MM-DD")],
    request_id: Annotated[
        str, typer.Option("--request-id", help="idempotency key: the same id again is replayed")
    ],
    actor: Actor,
    slot: Slot = None,
    kind: Annotated[
        str, typer.Option("--kind", help="scheduled (needs --slot) or on_demand (no slot)")
    ] = "scheduled",
    details_json: Annotated[
        str | None,
        typer.Option(
            "--details-json",
            help="FILE or - (stdin): students, subject, subjectType, teacherRole, topic, ...",
        ),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="ties related requests together")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Request one lesson slot: accepted, replayed, or a conflict naming the holder (exit 1).

    Accepted starts a new attempt; the same --request-id again is replayed and writes
    nothing; another request for a held slot is a conflict, recorded in its history.

    Example: lesson-ledger request --provider 7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11
    --school school-1 --date 2025-09-05 --slot 8:30-9:00 --request-id req-1 --actor alice
    --details-json details.json
    """
    details = read_json("--details-json", details_json) if details_json else None
    with opened_ledger(database_url) as ledger:
        result = ledger.request_lesson(
            provider_id=provider,
            school_id=school,
            lesson_date=date,
            time_slot=slot,
            request_id=request_id,
            actor=actor,
            kind=kind,
            details=details,
            correlation_id=correlation_id,
            source="cli",
        )
    print_result(result, as_json)


@lessons_commands.command()
def batch(
    file: Annotated[str, typer.Argument(help="a JSON file, or - for stdin")],
    actor: Actor,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="partial: each item on its own (the default); atomic: all or nothing",
        ),
    ] = None,
    batch_id: Annotated[
        str | None,
        typer.Option(
            "--batch-id",
            help="correlation id; item i's request id is <batch-id>-<i> (give it to re-run)",
        ),
    ] = None,
    provider: Provider = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Request up to 500 lessons at once: each item's outcome, and a summary.

    FILE is the calendar front end's body, {"batch": [{"lessonDate", "timeSlot",
    "schoolId", "students", "subject", ...}]} (the provider from --provider), or the
    ledger's own {"lessons": [{"provider_id", "school_id", ...}], "mode", "batch_id"}.
    Running it again with the same --batch-id replays and writes nothing. Exit 1 when an
    atomic batch was rejected (it wrote nothing).

    Example: lesson-ledger batch week-36.json --provider
    7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11 --batch-id week-36 --mode atomic
    """
    body = read_json("FILE", file)
    try:
        parsed = read_batch(body, provider_id=provider, batch_id=batch_id, mode=mode, actor=actor)
    except BatchFileError as wrong:
        raise bad_input(wrong.field, str(wrong).split(": ", 1)[1]) from None
    with opened_ledger(database_url) as ledger:
        result = ledger.request_batch(parsed.items, mode=parsed.mode, batch_id=parsed.batch_id)
    rejected = result.mode == "atomic" and not result.written
    if as_json:
        print_json(_batch_json(result))
    else:
        _print_batch(result, parsed.generated_batch_id)
    if rejected:
        raise typer.Exit(REJECTED)


@lessons_commands.command()
def show(
    lesson_id: LessonIdArgument = None,
    provider: Provider = None,
    school: School = None,
    date: LessonDate = None,
    slot: Slot = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """A lesson's current state, from its events (students as a count).

    Example: lesson-ledger show bc6d9951-98a0-5f69-bb51-784a7571209c, or by its key:
    lesson-ledger show --provider 7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11 --school school-1
    --date 2025-09-05 --slot 08:30-09:00
    """
    wanted = lesson_id_from(lesson_id, provider, school, date, slot)
    with opened_ledger(database_url) as ledger:
        lesson = ledger.get_lesson(wanted)
        if lesson is None:
            raise lesson_not_found(wanted, provider, school, date, slot)
    state = _state_json(lesson)
    if as_json:
        print_json(state)
        return
    table = Table("field", "value", title=f"lesson {wanted}")
    erased = state.pop("students_erased")
    if erased:
        state["students"] = f"{state['students']} ({erased} erased)"
    if state.pop("content_erased"):
        state["content"] = ERASED
    for name, value in state.items():
        if value not in (None, "", [], ()):
            table.add_row(name, _cell(value))
    print_table(table)


@lessons_commands.command()
def history(
    lesson_id: LessonIdArgument = None,
    provider: Provider = None,
    school: School = None,
    date: LessonDate = None,
    slot: Slot = None,
    as_of_version: Annotated[
        int | None,
        typer.Option("--as-of-version", min=1, help="only the events up to this version"),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="only the events recorded up to this ISO time (no zone: UTC)"),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """A lesson's every event and rejected attempt, in order; its state as it was then.

    Each line: when, who (actor), which request (request_id), which batch
    (correlation_id), from where (source) and what changed. --as-of-version N and
    --as-of TIME stop the history there and show the state as it was at that point.

    Example: lesson-ledger history --provider 7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11
    --school school-1 --date 2025-09-05 --slot 8:30-9:00 --as-of 2025-09-05T08:00:00Z
    """
    wanted = lesson_id_from(lesson_id, provider, school, date, slot)
    then = parse_timestamp("--as-of", as_of)
    with opened_ledger(database_url) as ledger:
        try:
            found = ledger.history(wanted, as_of_version=as_of_version, as_of=then)
        except LessonNotFound:
            raise lesson_not_found(wanted, provider, school, date, slot) from None
    if as_json:
        print_json(_history_json(found))
        return
    _print_history(found, as_of_version, as_of)


# Reading input.


def lesson_id_from(
    lesson_id: str | None,
    provider: str | None,
    school: str | None,
    date: str | None,
    slot: str | None,
) -> UUID:
    """The lesson id given, or computed from the key's parts (in any accepted spelling)."""
    parts = {"--provider": provider, "--school": school, "--date": date, "--slot": slot}
    if lesson_id is not None:
        if any(value is not None for value in parts.values()):
            raise bad_input("LESSON_ID", "give the lesson id or its key parts, not both")
        try:
            return UUID(lesson_id)
        except ValueError:
            raise bad_input("LESSON_ID", f"is not a UUID: {lesson_id!r}") from None
    missing = [name for name, value in parts.items() if value is None]
    if len(missing) == len(parts):
        raise bad_input("LESSON_ID", "give the lesson id, or --provider --school --date --slot")
    if missing:  # each named, not the first alone
        verb = "is" if len(missing) == 1 else "are"
        raise bad_input(", ".join(missing), f"{verb} missing: the key needs all four parts")
    with exit_codes():
        return lesson_id_for(provider, school, date, slot)


def lesson_not_found(wanted: UUID, *key: str | None) -> LessonNotFound:
    """No lesson, said as the operator asked for it: by its id, or by its key's parts."""
    if key[0] is None:
        return LessonNotFound(f"no lesson has the id {wanted}")
    provider, school, date, slot = key
    return LessonNotFound(
        f"no lesson for provider {provider}, school {school!r}, date {date}, slot {slot!r} "
        f"(its id would be {wanted})"
    )


# Output.


def print_result(result: CommandResult, as_json: bool) -> None:
    """A command's answer: the lesson, the outcome, its attempt and position."""
    if as_json:
        print_json(vars(result))
        return
    table = Table(id_column("lesson id"), "outcome", "attempt", "position")
    position = "" if result.position is None else str(result.position)
    table.add_row(str(result.lesson_id), result.outcome, str(result.attempt), position)
    print_table(table)


ERASED = "(erased: a student of this lesson, or its date)"


def _state_json(state: LessonState) -> dict[str, Any]:
    """The state as JSON data; students (their sensitive part) only as a count."""
    data = state.as_dict()
    data["students"] = len(state.students) if state.students is not None else None
    data["students_erased"] = state.students_erased
    data["content_erased"] = state.content_erased
    data["flags"] = list(state.flags)
    return data


def _history_json(found: LessonHistory) -> dict[str, Any]:
    return {
        "lesson_id": found.lesson_id,
        "entries": [vars(entry) for entry in found.entries],
        "state": _state_json(found.state) if found.state else None,
    }


def _print_history(found: LessonHistory, as_of_version: int | None, as_of: str | None) -> None:
    limits = [f"up to version {as_of_version}" if as_of_version else "", as_of and f"as of {as_of}"]
    limit = ", ".join(part for part in limits if part)
    table = Table(title=f"history of lesson {found.lesson_id}" + (f" ({limit})" if limit else ""))
    table.add_column("v", justify="right", no_wrap=True)
    table.add_column("recorded at (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("who (source), request, batch")
    table.add_column("what changed", ratio=1)
    # The canonical key, from the first event (an Opened, or an OpenedByRequest), to show
    # where a caller spelled it otherwise.
    key = {k: str(v) for k, v in found.entries[0].changes.items()} if found.entries else {}
    for entry in found.entries:
        who = f"{entry.actor} ({entry.source})\nrequest {entry.request_id}"
        if entry.correlation_id:
            who += f"\nbatch {entry.correlation_id}"
        table.add_row(
            str(entry.version),
            entry.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            _event_label(entry),
            who,
            _changes(entry, key),
        )
    print_table(table)
    if found.state is None:
        out.print("The lesson did not exist yet at that point.")
        return
    state = found.state
    holder = f"request {state.request_id} by {state.requested_by}" if state.request_id else ""
    out.print(
        f"State at version {state.version}: {state.status}, attempt {state.attempt}"
        + (f", held by {holder}" if holder else "")
        + (f", flags {', '.join(state.flags)}" if state.flags else "")
    )


def _event_label(entry: HistoryEntry) -> str:
    if entry.event == "RequestRejected":
        return "[yellow]RequestRejected[/yellow]"
    return entry.event


def _changes(entry: HistoryEntry, key: dict[str, str]) -> str:
    """What an event changed, in one short line; a rejection says why and who holds the
    slot; a key spelled otherwise than its canonical form shows how it was sent."""
    changes = entry.changes
    if entry.event == "RequestRejected":
        text = f"{changes['reason']}: {changes['command']} turned away"
        text += f"; slot {changes['holder_status']}"
        if changes.get("holder_request_id"):
            text += f", held by {changes['holder_request_id']} ({changes['holder_actor']})"
    else:
        shown = {k: v for k, v in changes.items() if v not in (None, [], {}, "")}
        if shown.pop("content_erased", False):
            shown["content"] = ERASED
        details = shown.pop("details", None)
        if isinstance(details, dict):
            shown.update({k: v for k, v in details.items() if v not in (None, [], {}, "")})
        text = ", ".join(f"{name}={_cell(value)}" for name, value in shown.items())
    respelled = {
        part: sent
        for part, sent in (entry.as_sent or {}).items()
        if part in key and sent != key[part]
    }
    if respelled:
        text += "\nsent as " + ", ".join(f"{part}={sent!r}" for part, sent in respelled.items())
    return text


def _cell(value: object) -> str:
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(value)


def _item_detail(item: BatchItemResult) -> str:
    error = item.error
    if isinstance(error, InvalidLessonRequest):
        return "; ".join(f"{e['field']}: {e['message']}" for e in error.errors)
    if isinstance(error, LessonConflict) and error.holder is not None:
        holder = error.holder
        return f"held by request {holder.request_id} ({holder.actor}, {holder.status})"
    return str(error) if error is not None else ""


def _batch_json(result: BatchResult) -> dict[str, Any]:
    items = []
    for item in result.items:
        error: dict[str, Any] | None = None
        if isinstance(item.error, InvalidLessonRequest):
            error = {"type": "invalid", "detail": str(item.error), "errors": item.error.errors}
        elif isinstance(item.error, LessonConflict):
            holder = item.error.holder.as_dict() if item.error.holder else None
            error = {"type": item.error.reason, "detail": str(item.error), "holder": holder}
        elif item.error is not None:
            error = {"type": type(item.error).__name__, "detail": str(item.error)}
        items.append({**vars(item), "error": error})
    return {
        "batch_id": result.batch_id,
        "mode": result.mode,
        "written": result.written,
        "items": items,
        "summary": result.summary,
    }


def _print_batch(result: BatchResult, generated_batch_id: bool) -> None:
    table = Table("#", "outcome", id_column("lesson id"), "attempt", "position", "detail")
    for item in result.items:
        table.add_row(
            str(item.index),
            item.outcome,
            str(item.lesson_id or ""),
            "" if item.attempt is None else str(item.attempt),
            "" if item.position is None else str(item.position),
            _item_detail(item),
        )
    print_table(table)
    summary = ", ".join(f"{count} {outcome}" for outcome, count in result.summary.items() if count)
    written = "written" if result.written else "nothing written"
    out.print(f"batch {result.batch_id} ({result.mode}, {written}): {summary or 'empty'}")
    if generated_batch_id:
        out.print(f"(no --batch-id given: re-run with --batch-id {result.batch_id} to replay)")
