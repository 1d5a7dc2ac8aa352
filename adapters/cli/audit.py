"""`lesson-ledger report conflicts | export | verify-export`: the incident report as a
query, and the audit trail as JSON Lines checked back against the ledger.

Exit codes: 0 done, 1 an export differs from the ledger, 2 bad input (the option named),
3 the database cannot be reached. Tables and JSON on stdout; progress on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from eventsourcing.persistence import StoredEvent
from rich.table import Table

from adapters.audit.ledger_audit import LedgerAudit, open_audit
from adapters.audit.signing import open_signer
from adapters.cli.options import (
    DONE,
    REJECTED,
    AsJson,
    DatabaseUrl,
    bad_input,
    err,
    exit_codes,
    flag,
    id_column,
    opened_ledger,
    out,
    parse_timestamp,
    print_json,
    print_table,
    progress_bar,
)
from adapters.cli.proofs import PublicKey, checkpoint_file, parsed_public_key
from adapters.counts import counted
from adapters.eventstore import event_log, standalone_mapper
from adapters.storage.database import Database
from adapters.storage.refused_requests import SqlInvalidRequestLog
from domain.ledger import LessonLedger
from projections.audit_trail import (
    STUDENT_DATA,
    TrailFilter,
    Verification,
    export_line,
    trail,
    verify,
    verify_proven,
)
from projections.conflict_report import ONE_BATCH, ConflictReport, conflict_report
from projections.merkle.verify import EventProof

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
    if end is not None and only.since is not None and end < only.since:
        # Swapped, they would report nothing: said, not answered with an empty report.
        raise bad_input(
            "--until", f"{end.isoformat()} is before --since ({only.since.isoformat()})"
        )
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
    proofs: Annotated[
        Path | None,
        typer.Option(
            "--proofs",
            help="give each line its inclusion proof, and write the checkpoint they lead "
            "to in this file",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The audit trail as JSON Lines: one event per line, with its position.

    Each line: position (the notification id), lesson_id, version, event, recorded_at,
    request_id, actor, correlation_id, source, as_sent (the key as the caller spelled
    it) and data (what changed). Students' sensitive part is never exported: `students`
    is a count. Streams the log a page at a time, so a large export uses constant memory.
    Check it later with verify-export (with the same filters). With --proofs, each line
    also holds its event's stored bytes and inclusion proof in a signed checkpoint, which
    verify-export --checkpoint checks without the ledger.

    Example: lesson-ledger export --school school-1 --since 2025-09-01 -o audit.jsonl
    """
    only = _filter(provider, school, since)
    with opened_ledger(database_url) as ledger, _destination(output) as sink:
        log = event_log(ledger)
        prove = _prover(ledger, database_url, proofs) if proofs is not None else None
        head = log.head() if prove is None else prove.position
        with progress_bar(remaining=False, transient=True) as progress:
            task = progress.add_task("export", total=head)
            lines = 0
            for record in trail(log, only, progress=lambda at: progress.update(task, completed=at)):
                if prove is not None:
                    if record["position"] > prove.position:
                        break  # after the checkpoint: left for the next export
                    record["proof"] = prove.proof(record["position"])
                sink.write(export_line(record))
                sink.write("\n")
                lines += 1
        if prove is not None:
            prove.close()
    err.print(
        f"exported {counted(lines, 'event')} (log head {head})"
        + (f" to {output}" if output else "")
    )


@audit_commands.command("verify-export")
def verify_export(
    file: Annotated[Path, typer.Argument(help="a file written by export")],
    provider: Provider = None,
    school: School = None,
    since: Since = None,
    except_student_data: Annotated[
        bool,
        flag(
            "--except-student-data",
            help="let lesson content differ (sealed since, by students encrypt-existing)",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="check the lines' proofs against this checkpoint instead of the ledger "
            "(an export made with --proofs; no database needed with --public-key)",
        ),
    ] = None,
    public_key: PublicKey = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Check an export against the ledger; exit 1 when anything differs.

    Every line must be the ledger's event at its position with the same content, and
    no event up to the export's last position may be missing (give the filters the
    export was made with). Reports each changed, unknown or missing line. With
    --checkpoint, each line is checked against its inclusion proof instead: the stored
    bytes it proves are in the signed tree, and the line is what they say.

    Example: lesson-ledger verify-export audit.jsonl --school school-1 --since 2025-09-01
    """
    only = _filter(provider, school, since)
    ignored = STUDENT_DATA if except_student_data else frozenset()
    try:
        # A byte that is not UTF-8 reads as U+FFFD: its line then differs from the
        # ledger's, and is named as every altered line is.
        source = file.open(encoding="utf-8", errors="replace")
    except OSError as error:
        raise bad_input("FILE", f"cannot read {str(file)!r}: {error.strerror or error}") from None
    if checkpoint is not None:
        signed = checkpoint_file("--checkpoint", checkpoint)
        key = parsed_public_key(public_key) or _ledger_public_key(database_url)
        with source:
            found = verify_proven(source, signed, key, _decoder(), ignored)
    else:
        with source, opened_ledger(database_url) as ledger:
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
        against = "the ledger" if checkpoint is None else "its proofs"
        out.print(f"{file}: {_verdict(found, against)}")
    if found.differences:
        raise typer.Exit(REJECTED)


def _verdict(found: Verification, against: str) -> str:
    """What a check of an export found, in a line."""
    if not found.lines and not found.differences:
        # "Matches" would read as a pass of a file that holds nothing.
        return f"holds no event, nothing compared with {against}"
    lines = f"{counted(found.lines, 'line')} up to position {found.last_position}"
    if not found.differences:
        return f"{lines}: matches {against}"
    return f"{lines}: DIFFERS from {against} ({counted(len(found.differences), 'difference')})"


class _Prover:
    """Inclusion proofs for an export, in a checkpoint signed when it starts."""

    def __init__(self, audit: LedgerAudit, destination: Path) -> None:
        self.audit = audit
        audit.catch_up()
        # The position first: the tree the checkpoint then signs holds at least its
        # events, though the server's follower may add more between the two.
        self.position = audit.store.position()[0]
        self.checkpoint = audit.checkpoint()
        text = json.dumps(self.checkpoint.as_json(), indent=2) + "\n"
        try:
            destination.write_text(text, encoding="utf-8")
        except OSError as error:
            audit.close()
            raise bad_input("--proofs", f"cannot write {str(destination)!r}: {error}") from None

    def proof(self, position: int) -> dict[str, Any] | None:
        found = self.audit.proof_at(position, self.checkpoint)
        return None if found is None else found.as_json()

    def close(self) -> None:
        self.audit.close()


def _prover(ledger: LessonLedger, database_url: str | None, destination: Path) -> _Prover:
    with exit_codes():
        return _Prover(open_audit(Database.from_url(database_url), ledger), destination)


def _ledger_public_key(database_url: str | None) -> bytes:
    with exit_codes():
        return open_signer(Database.from_url(database_url)).public_key


def _decoder() -> Callable[[EventProof], Any]:
    mapper = standalone_mapper()

    def decode(proof: EventProof) -> Any:
        stored = StoredEvent(proof.lesson_id, proof.version, proof.topic, proof.state)
        return mapper.to_domain_event(stored)

    return decode


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
    print_table(causes)

    contested = Table(
        id_column("lesson id"),
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
        holder = collision.holder_batch
        if collision.one_batch:
            holder += f" ({ONE_BATCH})"
        collisions.add_row(collision.batch, holder, str(collision.count), gap)
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
        print_table(table)
    else:
        out.print(f"{table.title}: none")
