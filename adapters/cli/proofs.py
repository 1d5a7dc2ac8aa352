"""`lesson-ledger audit checkpoint | verify | public-key`: the tamper-evident log.

Exit codes: 0 intact (or done), 1 the log differs from its tree or a checkpoint, 2 bad
input (the option named), 3 the database or a key cannot be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from adapters.audit.ledger_audit import LedgerAudit, open_audit
from adapters.audit.signing import parse_public_key, public_key_text
from adapters.cli.options import (
    REJECTED,
    AsJson,
    DatabaseUrl,
    bad_input,
    err,
    exit_codes,
    opened_ledger,
    out,
    print_json,
    progress_bar,
    read_json,
)
from adapters.counts import counted
from adapters.storage.database import Database
from projections.merkle.audit import AuditReport
from projections.merkle.checkpoint import Checkpoint

audit_app = typer.Typer(
    help="The tamper-evident log: signed checkpoints, and proof that no event was altered, "
    "removed or slipped in.",
    no_args_is_help=True,
)

PublicKey = Annotated[
    str | None,
    typer.Option(
        "--public-key",
        help="the ledger's public key as `audit public-key` printed it "
        "(default: the key of this ledger's signing key)",
    ),
]


@contextmanager
def opened_audit(database_url: str | None) -> Iterator[LedgerAudit]:
    """The audit of the ledger at the URL, for one command; failures become exit codes."""
    with opened_ledger(database_url) as ledger, exit_codes():
        audit = open_audit(Database.from_url(database_url), ledger)
        try:
            yield audit
        finally:
            audit.close()


@audit_app.command("checkpoint")
def checkpoint(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write it to this file (default: stdout)"),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Sign the tree of every event recorded so far, keep the checkpoint, and print it.

    JSON: size (events), root (hex), time, key_id, signature (base64). Keep it outside
    the database (give it to the school, or a third party): `audit verify --against`
    proves later that the log still holds exactly those events, in that order.

    Example: lesson-ledger audit checkpoint --output checkpoint-2025-09-05.json
    """
    with opened_audit(database_url) as audit:
        audit.catch_up()
        made = audit.checkpoint()
    text = json.dumps(made.as_json(), indent=2) + "\n"
    if output is None:
        out.print(text, end="", highlight=False, soft_wrap=True)
    else:
        _write(output, text)
        err.print(f"checkpoint of {counted(made.size, 'event')} written to {output}")


@audit_app.command("verify")
def verify(
    against: Annotated[
        Path | None,
        typer.Option("--against", help="a checkpoint file written earlier (audit checkpoint)"),
    ] = None,
    public_key: PublicKey = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Recompute the tree from the events as stored and check it: exit 0 when intact.

    Checks every event against the stored tree, the root the tree's nodes make, every
    re-anchoring (a migration's signed record) and, with --against, an earlier
    checkpoint: its signature, its root from the log's first events, and that today's
    tree extends it. Exit 1 names each altered, missing, inserted or moved event (lesson,
    version, position) and the first position where the log diverges.

    Example: lesson-ledger audit verify --against checkpoint-2025-09-05.json
    """
    earlier = checkpoint_file("--against", against) if against is not None else None
    key = parsed_public_key(public_key)
    with opened_audit(database_url) as audit:
        size = audit.tree.size()
        with progress_bar(transient=True) as progress:
            task = progress.add_task("verify", total=size)
            report = audit.verify(
                earlier, key, on_progress=lambda done: progress.update(task, completed=done)
            )
        later = audit.events_after(report.comparison.position)
    if as_json:
        print_json({**report.as_json(), "events_after": later})
    else:
        _print_report(report)
        if later:
            out.print(
                f"{counted(later, 'event')} recorded after position "
                f"{report.comparison.position}: not in the tree yet, so not verified (a "
                "running server adds new events within moments; `lesson-ledger audit "
                "checkpoint` adds them now)"
            )
    if not report.ok:
        raise typer.Exit(REJECTED)


@audit_app.command("public-key")
def public_key(database_url: DatabaseUrl = None) -> None:
    """Print the public key that checks this ledger's checkpoints (base64), to give to
    auditors with the checkpoints.

    Example: lesson-ledger audit public-key
    """
    with opened_audit(database_url) as audit:
        out.print(public_key_text(audit.signer.public_key), highlight=False)


def _print_report(report: AuditReport) -> None:
    found = report.comparison
    for record in report.reanchorings:
        data = record.record.as_json()
        state = "accepted" if record.problem is None else f"REFUSED: {record.problem}"
        out.print(
            f"re-anchoring {data['time']}: {counted(data['changed_events'], 'event')} rewritten "
            f"({data['reason']}): {state}",
            highlight=False,
        )
    for finding in found.findings:
        out.print(str(finding), highlight=False)
    if found.first_divergence is not None:
        out.print(f"the log diverges from the tree at position {found.first_divergence}")
    if found.intact and not report.tree_root_ok:
        out.print("the stored tree's nodes do not make the root of its leaves")
    if report.checkpoint is not None:
        cp = report.checkpoint.record
        verdict = "holds" if report.checkpoint.problem is None else report.checkpoint.problem
        out.print(f"checkpoint of {counted(cp.size, 'event')} ({cp.time.isoformat()}): {verdict}")
    if report.ok:
        out.print(f"intact: {counted(found.size, 'event')}, up to position {found.position}")


def checkpoint_file(option: str, path: Path) -> Checkpoint:
    data = read_json(option, str(path))
    if not isinstance(data, dict):
        raise bad_input(option, "is not a checkpoint")
    try:
        return Checkpoint.from_json(data)
    except ValueError as error:
        raise bad_input(option, str(error)) from None


def parsed_public_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return parse_public_key(text)
    except ValueError as error:
        raise bad_input("--public-key", str(error)) from None


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise bad_input("--output", f"cannot write {str(path)!r}: {error.strerror}") from None
