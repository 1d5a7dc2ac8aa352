"""The generation worker on a database: its position, runner lock, wakeup and generator,
wired from the settings, to run in its own process (`lesson-ledger worker`) or inside
the HTTP server.

In the server (e.g. for the embedded SQLite default), from the app's lifespan:

    from adapters.worker import start_worker_in_background

    worker = start_worker_in_background(settings.database_url, ledger=app.state.ledger)
    try:
        yield
    finally:
        worker.stop()

`start_worker_in_background(database_url=None, settings=None, *, ledger=None,
generator=None) -> RunningWorker` opens what the worker needs (raising LedgerUnavailable
or GeneratorConfigError at once, as one line) and starts it in a daemon thread;
`RunningWorker.stop(timeout)` stops it and frees what it opened (not a ledger passed in).
`wake()` makes it look at the log at once (PostgreSQL wakes it by NOTIFY anyway; SQLite
is polled). Any number of processes may start one: one is the dispatcher, the others
wait (see projections/generation.py).

Settings (environment, prefix LESSON_LEDGER_): GENERATOR (template|openai),
OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY, OPENAI_TIMEOUT_SECONDS,
OPENAI_CONNECT_TIMEOUT_SECONDS, OPENAI_MAX_TRIES, OPENAI_BACKOFF_SECONDS,
OPENAI_MAX_BACKOFF_SECONDS, OPENAI_TEMPERATURE, OPENAI_JSON_MODE (adapters/generators.py),
and WORKER_CONCURRENCY, WORKER_POLL_SECONDS, WORKER_STOP_GRACE_SECONDS (here).

The position lives in the eventsourcing library's tracking table under the tracking
name `generation_worker`: on SQLite the shared `tracking` table (the lessons projection
keeps its own names there), on PostgreSQL a table of its own,
`<schema>.generation_worker_tracking`. The library's single-row tracking insert only
moves a position forward, which is the guard a position needs.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import Any

from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment
from pydantic import Field

from adapters.eventstore import event_log, event_store, open_ledger
from adapters.generators import make_generator
from adapters.generators.settings import GeneratorSettings
from adapters.postgres.leases import runner_lock_for
from adapters.postgres.lessons_view import ListenWakeup
from adapters.sqlite.locks import FileLock, ProcessLock
from adapters.storage.database import Database
from adapters.storage.tables import create_missing
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from projections.generation.port import LessonGenerator
from projections.generation.worker import TRACKING_NAME, GenerationWorker
from projections.view import PollingWakeup, RunnerLock, Wakeup

_DEFAULTS = {
    "POSTGRES_POOL_SIZE": "2",
    "POSTGRES_MAX_OVERFLOW": "4",
    "POSTGRES_CONNECT_TIMEOUT": "5",
    "POSTGRES_LOCK_TIMEOUT": "10",
    "SQLITE_LOCK_TIMEOUT": "30",
}


class WorkerSettings(GeneratorSettings):
    """The generator's settings and the worker's own (LESSON_LEDGER_WORKER_...)."""

    worker_concurrency: int = Field(default=4, ge=1, le=64)
    """Attempts generated at once (threads of the active worker)."""
    worker_poll_seconds: float = Field(default=0.1, gt=0)
    """How often an idle worker looks at the log where it cannot LISTEN: SQLite, and
    PostgreSQL through a transaction pooler without a direct URL."""
    worker_stop_grace_seconds: float = Field(default=10.0, ge=0)
    """On stop, how long attempts in flight may take to finish before the generator is
    closed under them (they are then generated again by the next worker)."""


class TrackedPosition:
    """The worker's position as a tracking record of the library's tracking recorder."""

    def __init__(self, recorder: TrackingRecorder, name: str = TRACKING_NAME) -> None:
        self.recorder = recorder
        self.name = name

    def position(self) -> int:
        return self.recorder.max_tracking_id(self.name) or 0

    def advance(self, position: int) -> None:
        # IntegrityError: already at or past it (a previous dispatcher got further).
        with suppress(IntegrityError):
            self.recorder.insert_tracking(Tracking(self.name, position))


class RunningWorker:
    """A generation worker and what was opened for it; `stop()` closes them."""

    def __init__(
        self,
        worker: GenerationWorker,
        settings: WorkerSettings,
        closers: list[Any],
    ) -> None:
        self.worker = worker
        self.settings = settings
        self._closers = closers
        self._closed = False
        self._close_lock = threading.Lock()

    def start(self) -> RunningWorker:
        """Run in a daemon thread."""
        self.worker.start()
        return self

    def run(self) -> None:
        """Run in the caller's thread until `request_stop()` (e.g. from a signal handler)."""
        self.worker.run()

    def request_stop(self) -> None:
        self.worker.request_stop()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop: attempts in flight get `worker_stop_grace_seconds` (or `timeout`) to
        finish; then the generator is closed (interrupting retries) and the rest are left
        for the next worker. True when the worker thread has ended."""
        grace = self.settings.worker_stop_grace_seconds if timeout is None else timeout
        stopped = self.worker.stop(grace)
        if not stopped:
            self.worker.generator.close()
            stopped = self.worker.join(5.0)
        self.close()
        return stopped

    def close(self) -> None:
        """Free what was opened for the worker (call after it stopped)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for close in reversed(self._closers):
            with suppress(Exception):  # closing is best effort; nothing is lost here
                close()


def open_worker(
    database_url: str | Database | None = None,
    settings: WorkerSettings | None = None,
    *,
    ledger: LessonLedger | None = None,
    generator: LessonGenerator | None = None,
) -> RunningWorker:
    """A generation worker on the database (not started). Raises LedgerUnavailable
    (DatabaseUrlError for a malformed URL) or GeneratorConfigError, as one line."""
    settings = settings or WorkerSettings()
    database = (
        database_url if isinstance(database_url, Database) else Database.from_url(database_url)
    )
    closers: list[Any] = []
    try:
        generator = generator or make_generator(settings)
        closers.append(generator.close)
        if ledger is None:
            ledger = open_ledger(database)
            closers.append(ledger.close)
        positions, close_tracking = _open_positions(database)
        closers.append(close_tracking)
        worker = GenerationWorker(
            ledger,
            event_log(ledger),
            generator,
            positions,
            _runner_lock(database),
            _wakeup(database, ledger, settings),
            concurrency=settings.worker_concurrency,
        )
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    return RunningWorker(worker, settings, closers)


def start_worker_in_background(
    database_url: str | Database | None = None,
    settings: WorkerSettings | None = None,
    *,
    ledger: LessonLedger | None = None,
    generator: LessonGenerator | None = None,
) -> RunningWorker:
    """Open a generation worker and run it in a daemon thread; call `.stop()` on shutdown.

    `database_url` defaults to LESSON_LEDGER_DATABASE_URL; `settings` to WorkerSettings()
    from the environment; pass the process's `ledger` to share it.
    """
    return open_worker(database_url, settings, ledger=ledger, generator=generator).start()


def create_worker_tables(database: Database) -> None:
    """Make the worker's tracking table if missing (`lesson-ledger db migrate`)."""
    _, close = _open_positions(database)
    close()


def _open_positions(database: Database) -> tuple[TrackedPosition, Any]:
    env = database.recorder_env(_DEFAULTS)
    try:
        factory: Any = InfrastructureFactory.construct(Environment(TRACKING_NAME, env))
    except Exception as error:
        raise LedgerUnavailable(f"cannot open the worker's tracking: {one_line(error)}") from None
    try:
        recorder: TrackingRecorder = factory.tracking_recorder()
        create = recorder.create_table  # type: ignore[attr-defined]
        create_missing(database, create, [f"{TRACKING_NAME}_tracking"])
    except Exception as error:  # the library's and the drivers' errors, as one line
        factory.close()
        raise LedgerUnavailable(f"cannot open the worker's tracking: {one_line(error)}") from None
    return TrackedPosition(recorder), factory.close


def _runner_lock(database: Database) -> RunnerLock:
    if database.kind == "postgresql":
        return runner_lock_for(database, TRACKING_NAME)
    if database.path == ":memory:":
        return ProcessLock(f"memory.{TRACKING_NAME}")
    return FileLock(f"{database.path}.{TRACKING_NAME}.lock", TRACKING_NAME)


def _wakeup(database: Database, ledger: LessonLedger, settings: WorkerSettings) -> Wakeup:
    session = database.session
    if session is not None:  # PostgreSQL with a session to LISTEN on
        recorder: Any = event_store(ledger).recorder
        return ListenWakeup(session, recorder.channel_name)
    return PollingWakeup(settings.worker_poll_seconds)
