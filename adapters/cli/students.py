"""`lesson-ledger students erase | erasures | encrypt-existing`, `lesson-ledger retention
apply`, `lesson-ledger keys rotate`: students' data, erased by destroying the keys it is
sealed under (adapters/keys/), and those keys kept.

Exit codes: 0 done, 1 nothing to erase (an unknown student, or one erased before), 2 bad
input, 3 the database or the keys cannot be used.
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adapters.audit.ledger_audit import open_audit
from adapters.cli.options import (
    REJECTED,
    AsJson,
    DatabaseUrl,
    bad_input,
    err,
    exit_codes,
    flag,
    login_name,
    opened_ledger,
    out,
    print_json,
    print_table,
    progress_bar,
)
from adapters.counts import counted
from adapters.eventstore import event_store
from adapters.keys.erasure import Erasure, Erasures, retention_cut_off
from adapters.keys.keyfile import KEY_FILE_SETTING
from adapters.keys.migration import PAGE_SIZE, encrypt_existing
from adapters.keys.opening import KEK_SETTING
from adapters.keys.rotation import rotate
from adapters.keys.sealing import sealer_of
from adapters.storage.database import Database
from adapters.storage.merkle_store import MerkleStore
from adapters.storage.sqlstore import SqlStore
from domain.commands import check_actor, check_erasure_reason, check_fields
from projections.merkle.checkpoint import erasures_covered
from projections.merkle.reanchor import ReanchorRefused

students_app = typer.Typer(
    help="Students' data: erase a student, list erasures, seal events of earlier releases.",
    no_args_is_help=True,
)
retention_app = typer.Typer(help="Retention: erase students' data older than a cut-off.")


REANCHOR_REASON = "students encrypt-existing: students' details and lesson content sealed"


Actor = Annotated[
    str,
    typer.Option(
        "--actor",
        help="recorded as who erased",
        default_factory=login_name,
        show_default="your login name",
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="why (kept with the erasure's record)")]


@students_app.command("erase")
def erase(
    student_id: Annotated[str, typer.Argument(help="the student's id, as requests sent it")],
    reason: Reason,
    actor: Actor,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Erase a student's data: their details in every lesson, and every lesson content
    made for them, can no longer be opened by anyone; the lessons, their keys, attempts and
    history stay. Exit 1 when the ledger holds no data of this student.

    Example: lesson-ledger students erase st-1 --reason "parent's request of 2025-09-10"
    """
    with opened_ledger(database_url) as ledger:
        erasures = Erasures(sealer_of(ledger), Database.from_url(database_url))
        done = erasures.erase_student(student_id, actor=actor, reason=reason)
    if done is None:
        err.print("[yellow]not found:[/yellow] the ledger holds no data of this student")
        raise typer.Exit(REJECTED)
    _print_erasure(done, as_json)


@students_app.command("erasures")
def erasures(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Every erasure, as recorded: when, who, why, how many keys and lessons, and whether
    the latest signed checkpoint covers it (`audit verify --against` checks those).

    Example: lesson-ledger students erasures --json
    """
    database = Database.from_url(database_url)
    with opened_ledger(database_url) as ledger:
        found = Erasures(sealer_of(ledger), database).records()
    covered = _covered(database)
    if as_json:
        print_json([{**vars(record), "covered": n < covered} for n, record in enumerate(found)])
        return
    table = Table(
        "erasure", "kind", "when (UTC)", "who", "why", "keys", "lessons", "in a checkpoint"
    )
    for n, record in enumerate(found):
        table.add_row(
            record.erasure_id[:12],
            record.kind,
            record.erased_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            record.actor,
            record.reason,
            str(record.keys),
            str(record.lessons),
            "yes" if n < covered else "not yet",
        )
    print_table(table)


def _covered(database: Database) -> int:
    """How many erasure records (the first, in order) the latest signed checkpoint
    covers; 0 before one does."""
    sql = SqlStore(database, pool_size=1)
    try:
        return erasures_covered(MerkleStore(sql, database.events_table).latest_checkpoint())
    finally:
        sql.close()


@students_app.command("encrypt-existing")
def encrypt_existing_events(
    database_url: DatabaseUrl = None,
    page_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="events per transaction")
    ] = PAGE_SIZE,
) -> None:
    """Seal the students' details and lesson content of events written before they were
    sealed, in place: nothing else changes (check with an export before, and
    verify-export --except-student-data after). Resumes where it stopped; running it again
    changes nothing. Events the log's tree already covers are then re-anchored: the tree
    takes their new bytes, with a signed record that `audit verify` shows.

    Example: lesson-ledger students encrypt-existing
    """
    database = Database.from_url(database_url)
    with opened_ledger(database_url) as ledger, progress_bar() as progress:
        store = event_store(ledger)
        task = progress.add_task("encrypt-existing", total=store.recorder.max_notification_id())
        done = encrypt_existing(
            store,
            sealer_of(ledger),
            database,
            on_progress=lambda at, head: progress.update(task, completed=at, total=head),
            page_size=page_size,
        )
        audit = open_audit(database, ledger)
        try:
            record = audit.reanchor(REANCHOR_REASON)
        except ReanchorRefused as refused:
            err.print(
                f"sealed {counted(done.sealed, 'event')} "
                f"(positions {done.start} to {done.position})"
            )
            err.print(f"[red]not re-anchored:[/red] {refused}")
            raise typer.Exit(REJECTED) from None
        finally:
            audit.close()
    err.print(f"sealed {counted(done.sealed, 'event')} (positions {done.start} to {done.position})")
    if record is not None:
        err.print(
            f"re-anchored the log's tree: {counted(len(record.changes), 'event')} rewritten, "
            f"root {record.old_root.hex()[:16]}... -> {record.new_root.hex()[:16]}..."
        )


@retention_app.command("apply")
def retention_apply(
    older_than: Annotated[
        int, typer.Option("--older-than", min=1, help="erase lessons dated more than DAYS ago")
    ],
    actor: Actor,
    reason: Annotated[str, typer.Option("--reason", help="recorded as why")] = "retention",
    dry_run: Annotated[bool, flag("--dry-run", help="count, erase nothing")] = False,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Erase the students' details (and lesson content) of every lesson dated more than
    DAYS ago: the lessons, their keys, attempts and audit trail stay.

    Example: lesson-ledger retention apply --older-than 365 --dry-run
    """
    cut_off = retention_cut_off(older_than)
    with exit_codes():  # a blank reason is refused before any progress is shown
        check_fields([("actor", check_actor, actor), ("reason", check_erasure_reason, reason)])
    with opened_ledger(database_url) as ledger, progress_bar() as progress:
        erasures = Erasures(sealer_of(ledger), Database.from_url(database_url))
        task = progress.add_task("retention", total=None)
        done = erasures.retention(
            cut_off,
            actor=actor,
            reason=reason,
            dry_run=dry_run,
            on_progress=lambda n, total: progress.update(task, completed=n, total=total),
        )
    if as_json:
        print_json(vars(done))
    elif dry_run:
        out.print(
            f"retention (dry run, nothing erased): {counted(done.keys, 'key')} of lesson dates "
            f"before {cut_off} would be destroyed, {counted(done.lessons, 'lesson')} reached"
        )
    elif not done.erasure_id:
        out.print(f"retention: nothing to erase, no key of a lesson date before {cut_off} left")
    else:
        _print_erasure(done, as_json)


def rotate_key(database_url: DatabaseUrl = None) -> None:
    """Rotate the key-encryption key: every data key rewrapped with a new one (written to
    the key file), no event touched.

    Example: lesson-ledger keys rotate
    """
    if os.environ.get(KEK_SETTING):
        raise bad_input(KEK_SETTING, "is set: rotate the key where it is kept, then rewrap")
    with opened_ledger(database_url) as ledger:
        database = Database.from_url(database_url)
        key_file = os.environ.get(KEY_FILE_SETTING) or f"{database.path}.keys.json"
        sealer = sealer_of(ledger)
        count = rotate(sealer.keys, Path(key_file), sealer.keys.kek)
    err.print(f"rewrapped {counted(count, 'data key')} with a new key-encryption key in {key_file}")


def _print_erasure(done: Erasure, as_json: bool) -> None:
    if as_json:
        print_json(vars(done))
        return
    out.print(
        f"{done.kind} erasure {done.erasure_id}: {counted(done.keys, 'key')} destroyed, "
        f"{counted(done.lessons, 'lesson')} reached"
    )
