"""The generation worker on a database: its position, runner lock, wakeup, generator,
rate limits and token budget, wired from the settings, to run in its own process
(`lesson-ledger worker`) or inside the HTTP server (`start_worker_in_background(url,
ledger=...)`, then `RunningWorker.stop()`).

On SQLite one process generates (projections/generation/worker.py), others stand by; on
PostgreSQL every worker process generates: one feeds a job queue from the log and all
claim from it (projections/generation/queue.py, adapters/postgres/jobs.py). The position
is kept in the eventsourcing library's tracking table as `generation_worker`, which only
moves forward.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
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
from adapters.generators.limits import Limits, MemoryRateLimiter, RateLimiter
from adapters.generators.settings import GeneratorSettings
from adapters.postgres.jobs import PostgresJobQueue
from adapters.postgres.leases import runner_lock_for
from adapters.postgres.listen import ListenWakeup
from adapters.postgres.rate_limits import PostgresRateLimiter, create_rate_limit_tables
from adapters.sqlite.locks import FileLock, ProcessLock
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tables import create_missing
from adapters.storage.usage import SqlUsageStore
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from projections.generation.budget import Budget
from projections.generation.port import LessonGenerator
from projections.generation.queue import Claimer, JobFeeder
from projections.generation.runtime import Runtime
from projections.generation.worker import TRACKING_NAME, GenerationWorker
from projections.view import PollingWakeup, RunnerLock, Wakeup

_DEFAULTS = {
    # The position is read and stored by one thread at a time.
    "POSTGRES_POOL_SIZE": "1",
    "POSTGRES_MAX_OVERFLOW": "1",
    "POSTGRES_CONNECT_TIMEOUT": "5",
    "POSTGRES_LOCK_TIMEOUT": "10",
    "SQLITE_LOCK_TIMEOUT": "30",
}


class WorkerSettings(GeneratorSettings):
    """The generator's settings and the worker's own (LESSON_LEDGER_WORKER_...)."""

    worker_concurrency: int = Field(default=64, ge=1, le=1024)
    """Attempts generated at once by each worker process (tasks of its event loop): the
    default puts a calendar week's batch (40 lessons) in flight at once."""
    worker_db_threads: int = Field(default=4, ge=1, le=64)
    """Threads for the ledger's (synchronous) database calls, shared by all attempts
    (each call takes a millisecond or two: 4 keep up with hundreds of lessons a second,
    and each process holds few of PostgreSQL's connections)."""
    worker_poll_seconds: float = Field(default=0.1, gt=0, le=60)
    """How often an idle worker looks at the log where it cannot LISTEN: SQLite, and
    PostgreSQL through a transaction pooler without a direct URL."""
    worker_lease_seconds: float = Field(default=10.0, gt=0, le=3600)
    """PostgreSQL: how long a claimed job stays a process's without being renewed (it is
    renewed every third of this while the attempt runs): a killed process's jobs are
    taken up by the others this long after it died."""
    worker_claim_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    """PostgreSQL: how often a process looks for jobs besides being notified (for
    leases that ran out)."""
    worker_stop_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    """On stop, how long attempts in flight may take to finish before they are cancelled
    (they are then generated again by the next worker)."""
    worker_daily_token_cap: int | None = Field(default=None, ge=1)
    """Tokens each provider may use per UTC day; past it, further attempts fail with the
    cap as their reason instead of calling the model. None: no cap."""


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
    """A generation worker and what was opened for it; `stop()` closes them.

    `worker` is the part that follows the log (the dispatcher on SQLite, the job feeder
    on PostgreSQL); `claimer` claims jobs on PostgreSQL (None on SQLite)."""

    def __init__(
        self,
        worker: GenerationWorker | JobFeeder,
        claimer: Claimer | None,
        runtime: Runtime,
        generator: LessonGenerator,
        limiter: RateLimiter | None,
        settings: WorkerSettings,
        closers: list[Any],
    ) -> None:
        self.worker: GenerationWorker | JobFeeder = worker
        self.claimer = claimer
        self.runtime = runtime
        self.generator = generator
        self.limiter = limiter
        self.settings = settings
        self._dispatcher = worker if isinstance(worker, GenerationWorker) else None
        self._closers = closers
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def counts(self) -> Counter[str]:
        """Outcomes of the attempts this process ran."""
        if self.claimer is not None:
            return self.claimer.counts
        assert self._dispatcher is not None
        return self._dispatcher.counts

    def start(self) -> RunningWorker:
        """Run in daemon threads."""
        self.worker.start()
        if self.claimer is not None:
            self.claimer.start()
        return self

    def run(self) -> None:
        """Run in the caller's thread until `request_stop()` (e.g. from a signal handler)."""
        if self.claimer is not None:
            self.claimer.start()
        self.worker.run()

    def request_stop(self) -> None:
        self.worker.request_stop()
        if self.claimer is not None:
            self.claimer.request_stop()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop: attempts in flight get `worker_stop_grace_seconds` (or `timeout`) to
        finish; then they are cancelled and left for the next worker. True when the
        worker's threads have ended."""
        grace = self.settings.worker_stop_grace_seconds if timeout is None else timeout
        stopped = True
        if self.claimer is not None:
            stopped = self.claimer.stop(grace)
            stopped = self.worker.stop(5.0) and stopped
        elif not self.worker.stop(grace):
            self.runtime.cancel_all()
            stopped = self.worker.join(5.0)
        self.close()
        return stopped

    def close(self) -> None:
        """Free what was opened for the worker (call after it stopped)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        generator, limiter = self.generator, self.limiter

        async def close_in_loop() -> None:
            with suppress(Exception):
                await generator.aclose()
            if limiter is not None:
                with suppress(Exception):
                    await limiter.aclose()

        self.runtime.close(before=close_in_loop)
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
    # The package logs no bodies, but nothing it says at DEBUG is needed here either.
    for name in ("openai", "httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    closers: list[Any] = []
    runtime = Runtime(settings.worker_db_threads)
    try:
        limiter = _limiter(database, settings)
        generator = generator or make_generator(settings, limiter=limiter)
        if ledger is None:
            ledger = open_ledger(database)
            closers.append(ledger.close)
        # The job queue and the token counts commit without waiting for their WAL flush
        # (a few milliseconds each, for every attempt). Safe: a claim or finish lost in a
        # server crash is claimed again and found decided; a position stored after the
        # jobs commits durably, and a durable commit flushes the WAL before it; token
        # counts may lose the last moments before a crash.
        sql = SqlStore(
            database,
            pool_size=settings.worker_db_threads,
            session_options="-c synchronous_commit=off",
        )
        closers.append(sql.close)
        budget = Budget(SqlUsageStore(sql), settings.worker_daily_token_cap)
        positions, close_tracking = _open_positions(database)
        closers.append(close_tracking)
        lock, wakeup = _runner_lock(database), _wakeup(database, ledger, settings)
        if database.kind == "postgresql":
            jobs = PostgresJobQueue(sql)
            worker: GenerationWorker | JobFeeder = JobFeeder(
                event_log(ledger), jobs, positions, lock, wakeup
            )
            claimer: Claimer | None = Claimer(
                ledger,
                generator,
                jobs,
                _jobs_wakeup(database, jobs.channel, settings),
                runtime,
                concurrency=settings.worker_concurrency,
                lease_seconds=settings.worker_lease_seconds,
                poll_seconds=settings.worker_claim_poll_seconds,
                budget=budget,
            )
        else:
            claimer = None
            worker = GenerationWorker(
                ledger,
                event_log(ledger),
                generator,
                positions,
                lock,
                wakeup,
                runtime,
                concurrency=settings.worker_concurrency,
                budget=budget,
            )
    except BaseException:
        runtime.close()
        for close in reversed(closers):
            close()
        raise
    return RunningWorker(worker, claimer, runtime, generator, limiter, settings, closers)


def start_worker_in_background(
    database_url: str | Database | None = None,
    settings: WorkerSettings | None = None,
    *,
    ledger: LessonLedger | None = None,
    generator: LessonGenerator | None = None,
) -> RunningWorker:
    """Open a generation worker and run it in daemon threads; call `.stop()` on shutdown.

    `database_url` defaults to LESSON_LEDGER_DATABASE_URL; `settings` to WorkerSettings()
    from the environment; pass the process's `ledger` to share it.
    """
    return open_worker(database_url, settings, ledger=ledger, generator=generator).start()


def _limiter(database: Database, settings: WorkerSettings) -> RateLimiter | None:
    """The rate limits the settings set: shared in PostgreSQL, in memory on SQLite."""
    limits = Limits.from_settings(settings)
    if limits is None or settings.generator != "openai":
        return None
    if database.kind != "postgresql":
        return MemoryRateLimiter(limits)
    try:
        create_rate_limit_tables(database)
    except Exception as error:
        raise LedgerUnavailable(f"cannot open the rate limits: {one_line(error)}") from None
    name = f"{settings.openai_base_url.rstrip('/')} {settings.openai_model}"
    return PostgresRateLimiter(database, name, limits)


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


def _jobs_wakeup(database: Database, channel: str, settings: WorkerSettings) -> Wakeup:
    """Told of new jobs: LISTEN where there is a session, else the claim poll alone."""
    session = database.session
    if session is not None:
        return ListenWakeup(session, channel)
    return PollingWakeup(settings.worker_claim_poll_seconds)
