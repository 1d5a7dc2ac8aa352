"""`lesson-ledger worker`: the generation worker in a process of its own.

Runs until SIGTERM or SIGINT (Ctrl-C), then lets the attempts in flight finish (up to
LESSON_LEDGER_WORKER_STOP_GRACE_SECONDS) and exits 0. Exit codes: 0 stopped, 2 bad
usage or settings (a malformed database URL included), 3 infrastructure failure at start
(one clear line on stderr, no traceback). Once running, database outages are logged and
retried rather than ending the process. Logs are JSON lines on stderr.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from adapters import logs
from adapters.cli.options import BAD_INPUT, DONE, DatabaseUrl, err, exit_codes
from adapters.postgres.rights import check_rights
from adapters.settings import Settings
from adapters.storage.database import Database, redacted
from adapters.worker import RunningWorker, WorkerSettings, open_worker
from domain.errors import LedgerUnavailable


def worker(
    database_url: DatabaseUrl = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1024,
            help="attempts generated at once by this process; default "
            "$LESSON_LEDGER_WORKER_CONCURRENCY or 64",
            show_default=False,
        ),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(
            help="template (offline, the default) or openai; default $LESSON_LEDGER_GENERATOR",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate requested lessons: follow the log, one result per attempt.

    On PostgreSQL any number of workers share the work (a job queue; a killed worker's
    attempts are taken up by the others); on SQLite one generates and the others wait.

    Example: lesson-ledger worker --concurrency 64 --generator openai
    """
    if generator is not None and generator not in ("template", "openai"):
        err.print(f"[red]usage:[/red] --generator must be template or openai, not {generator!r}")
        raise typer.Exit(BAD_INPUT)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Before anything opens: a stop asked for while the worker starts is a clean stop too.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        url, running = _open(database_url, concurrency, generator)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    settings = running.settings
    err.print(
        f"generation worker on {redacted(url)} (generator {settings.generator}, "
        f"concurrency {settings.worker_concurrency}); stop with Ctrl-C"
    )
    try:
        if not stopping.is_set():
            running.start()
        # The worker runs in a thread so that this one can bound the shutdown: attempts
        # in flight get the grace period, then the generator is closed under them.
        while not stopping.wait(1.0):
            if running.worker.join(0):
                break  # the worker ended on its own (it does not, short of a bug)
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(DONE)


def _open(
    database_url: str | None, concurrency: int | None, generator: str | None
) -> tuple[str, RunningWorker]:
    """The database URL and the worker, configured; every failure is one line and an
    exit code."""
    with exit_codes():
        app_settings = Settings()
        logs.configure(app_settings.log_level)
        # httpx logs every request at INFO; the worker logs each attempt itself.
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
        overrides: dict[str, object] = {}
        if concurrency is not None:
            overrides["worker_concurrency"] = concurrency
        if generator is not None:
            overrides["generator"] = generator
        settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
        url = database_url or app_settings.database_url
        running = open_worker(url, settings)
        try:
            check_rights(Database.from_url(url))  # with table creation off, a grant missing
        except LedgerUnavailable:
            running.close()
            raise
        return url, running
    raise AssertionError("unreachable: exit_codes raises")
