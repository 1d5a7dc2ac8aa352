"""`lesson-ledger projections status|catch-up|follow|rebuild|verify`: the read model
from the command line.

Exit codes: 0 done, 1 verify found differences, 2 bad usage (a malformed database URL
included), 3 infrastructure failure (one clear line on stderr, no traceback). Progress
and runner states go to stderr; results (status, verify) to stdout.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer
from rich.progress import TextColumn
from rich.table import Table

from adapters.cli.options import (
    INTERRUPTED,
    REJECTED,
    AsJson,
    DatabaseUrl,
    err,
    exit_codes,
    flag,
    out,
    print_table,
    progress_bar,
)
from adapters.counts import counted
from adapters.read_model import open_read_model
from adapters.sqlite.lessons_view import DEFAULT_POLL_INTERVAL
from projections.log import DEFAULT_PAGE_SIZE, Page
from projections.read_model import LessonsReadModel
from projections.rebuild import REBUILD_PAGE_SIZE
from projections.verify import VerifyReport

projections_app = typer.Typer(
    name="projections",
    help="The lessons read model: status, catch-up, follow, rebuild, verify.",
    no_args_is_help=True,
)
PageSize = Annotated[int, typer.Option(min=1, max=10_000, help="events per transaction")]


@contextmanager
def _read_model(
    database_url: str | None, poll_interval: float = DEFAULT_POLL_INTERVAL
) -> Iterator[LessonsReadModel]:
    """The read model, with every failure turned into one line and an exit code."""
    with exit_codes():
        try:
            read_model = open_read_model(database_url, poll_interval=poll_interval)
            try:
                yield read_model
            finally:
                read_model.close()
        except KeyboardInterrupt:
            err.print("interrupted (a rebuild resumes where it stopped)")
            raise typer.Exit(INTERRUPTED) from None


@projections_app.command()
def status(
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Each projection's position, the head of the log, the lag, and rebuild progress.

    Example: lesson-ledger projections status --json
    """
    with _read_model(database_url) as read_model:
        statuses = read_model.status()
    if as_json:
        out.print_json(json.dumps([s.as_json() for s in statuses]))
        return
    table = Table("projection", "position", "head", "lag", "runner", "rebuild")
    for state in statuses:
        rebuild = state.rebuild
        table.add_row(
            state.name,
            str(state.position),
            str(state.head),
            str(state.lag),
            "active" if state.runner_active else "none",
            ""
            if rebuild is None
            else (
                f"{'running' if rebuild.running else 'interrupted'} at {rebuild.position}"
                f" of {rebuild.head} ({rebuild.fraction:.0%})"
            ),
        )
    print_table(table)


@projections_app.command("catch-up")
def catch_up(database_url: DatabaseUrl = None, page_size: PageSize = DEFAULT_PAGE_SIZE) -> None:
    """Bring the lessons table up to the head of the log, then exit.

    When a follower is active, wait for it instead. Example: lesson-ledger projections catch-up
    """
    with _read_model(database_url) as read_model:
        start, head = read_model.position(), read_model.head()
        started = time.monotonic()
        with progress_bar(TextColumn("{task.fields[events]} events")) as progress:
            task = progress.add_task("catch-up", total=max(head - start, 0), events=0)
            events = 0

            def page_done(page: Page) -> None:
                nonlocal events
                events += len(page.events)
                progress.update(task, completed=page.position - start, events=events)

            def waiting(target: int) -> None:
                err.print(f"lessons: another runner is active; waiting for it to reach {target}")

            result = read_model.catch_up(page_size=page_size, on_page=page_done, on_wait=waiting)
            progress.update(task, completed=max(head - start, 0))
    seconds = time.monotonic() - started
    rate = f", {result.events / seconds:,.0f} events/s" if result.events and seconds else ""
    err.print(
        f"lessons: at position {result.position} (applied {counted(result.events, 'event')}{rate})"
    )


@projections_app.command()
def follow(
    database_url: DatabaseUrl = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, max=60, help="SQLite: seconds between looks at the log")
    ] = DEFAULT_POLL_INTERVAL,
) -> None:
    """Keep the lessons table current until stopped (SIGINT, SIGTERM).

    One runner is active per database; a second one waits and takes over when the
    first stops or dies. Example: lesson-ledger projections follow
    """
    with _read_model(database_url, poll_interval=poll_interval) as read_model:

        def tell(state: str, detail: str) -> None:
            err.print(f"lessons: {state}{': ' + detail if detail else ''} (pid {os.getpid()})")

        follower = read_model.follower(page_size=page_size, on_state=tell)

        def stop(signum: int, frame: FrameType | None) -> None:
            follower.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        follower.run()


@projections_app.command()
def rebuild(
    database_url: DatabaseUrl = None,
    restart: Annotated[
        bool, flag("--restart", help="drop an interrupted rebuild instead of resuming it")
    ] = False,
    page_size: PageSize = REBUILD_PAGE_SIZE,
) -> None:
    """Rebuild the lessons table from the events while the live one keeps serving, then
    swap them in one transaction. An interrupted rebuild is resumed (or --restart).

    Example: lesson-ledger projections rebuild
    """
    with _read_model(database_url) as read_model, progress_bar() as progress:
        task = progress.add_task("rebuild", total=read_model.head())

        def started(position: int, resumed: bool) -> None:
            if resumed:
                err.print(f"lessons: resuming the interrupted rebuild at position {position}")

        def advanced(position: int, head: int) -> None:
            progress.update(task, completed=position, total=head)

        result = read_model.rebuild(
            restart=restart, page_size=page_size, on_progress=advanced, on_start=started
        )
    rate = f", {result.events / result.seconds:,.0f} events/s" if result.seconds else ""
    err.print(
        f"lessons: rebuilt ({counted(result.events, 'event')} in {result.seconds:.1f} s{rate}); "
        f"swapped in at position {result.position}"
    )


@projections_app.command()
def verify(
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
    show: Annotated[int, typer.Option(min=0, help="differences to print (0: all)")] = 50,
) -> None:
    """Fold the events afresh and report every row of the lessons table that differs.

    Exit code 1 when anything differs. Example: lesson-ledger projections verify
    """
    with _read_model(database_url) as read_model:
        report = read_model.verify()
        head = read_model.head()
    _print_report(report, as_json, head, show)
    if not report.ok:
        raise typer.Exit(REJECTED)


def _print_report(report: VerifyReport, as_json: bool, head: int, show: int) -> None:
    shown = report.differences if show == 0 else report.differences[:show]
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "position": report.position,
                    "head": head,
                    "lessons": report.lessons,
                    "rows": report.rows,
                    "ok": report.ok,
                    "differences": len(report.differences),
                    "shown": [
                        {
                            "lesson_id": str(d.lesson_id),
                            "kind": d.kind,
                            "columns": {k: [str(e), str(a)] for k, (e, a) in d.columns.items()},
                        }
                        for d in shown
                    ],
                }
            )
        )
        return
    out.print(
        f"lessons: verified at position {report.position}: "
        f"{counted(report.lessons, 'lesson')} in the events, "
        f"{counted(report.rows, 'row')} in the table, {len(report.differences)} differ"
    )
    if head > report.position:
        out.print(
            f"  the log goes on to position {head}: the events after {report.position} are "
            "not in the table yet, so not verified (a running server applies them within "
            "moments; `lesson-ledger projections catch-up` now)"
        )
    for difference in shown:
        detail = "; ".join(
            f"{name}: expected {expected!r}, found {actual!r}"
            for name, (expected, actual) in difference.columns.items()
        )
        out.print(f"  {difference.kind} {difference.lesson_id}{': ' + detail if detail else ''}")
    if len(shown) < len(report.differences):
        out.print(f"  ... and {len(report.differences) - len(shown)} more (--show 0 for all)")
