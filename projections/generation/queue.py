"""Several worker processes sharing the generation work, through a job queue (PostgreSQL:
adapters/postgres/jobs.py). See docs/decisions/0040-generation-job-queue.md.

Two parts in every worker process:

- The feeder follows the log and adds a job for each requested attempt. One feeder is
  active across processes (the runner lock, as for the read model's follower); the
  others stand by. Adding is idempotent (a job per attempt), and the feeder's position
  (the tracking table, `generation_worker`) is stored only after the jobs of everything
  before it are committed: the position never passes an attempt that has no job, and a
  feeder that dies in between adds the same jobs again, to no effect.
- The claimer claims jobs while the process has room (fewer than `concurrency` of its
  jobs have yet to have their call: projections/generation/gate.py holds the calls) and
  runs each as a task of the runtime's event loop (projections/generation/attempts.py).
  A job whose call returned makes room at once, while it is recorded; so a process never
  takes more than it can start, and the others claim the rest. A claim is a lease,
  renewed every third of its length while the attempt runs; when the attempt is finished
  the job is finished, and when it is left unfinished (the worker stopping) the job is
  released for anyone to claim at once. A process killed with SIGKILL renews nothing:
  its jobs are claimed by the others when their leases run out (`lease_seconds`).
  Claimers wake on the queue's notification and look at least every `poll_seconds`
  anyway (for leases that ran out).

At least once from the queue, exactly once from the domain: a job claimed again after a
lease ran out under a live holder (a holder cut off from the database for longer than
the lease) may be generated twice, and the ledger records one result (the second is
"replayed", or stale).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from socket import gethostname

from domain.errors import one_line
from domain.ledger import LessonLedger
from domain.lesson import LessonSlot
from projections.active_runner import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, ActiveRunner
from projections.generation.attempts import Attempts, Outcome
from projections.generation.budget import Budget
from projections.generation.jobs import Job, JobQueue
from projections.generation.port import LessonGenerator
from projections.generation.runtime import Runtime
from projections.generation.worker import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PAGE_SIZE,
    IDLE_RECHECK_SECONDS,
    REQUESTED_TOPICS,
    WORKER_ACTOR,
    PositionStore,
)
from projections.log import EventLog
from projections.view import RunnerLock, Wakeup

log = logging.getLogger("lesson_ledger.worker")

DEFAULT_LEASE_SECONDS = 10.0
DEFAULT_POLL_SECONDS = 1.0


class JobFeeder(ActiveRunner):
    """Follows the log and adds a job per requested attempt; one active across processes.

    `position` is the stored position while active (every request up to it has its job).
    """

    name = "generation feeder"
    logger = log

    def __init__(
        self,
        log: EventLog,
        jobs: JobQueue,
        positions: PositionStore,
        lock: RunnerLock,
        wakeup: Wakeup,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(lock, wakeup, on_state=on_state)
        self.log = log
        self.jobs = jobs
        self.page_size = page_size
        self._positions = positions
        self._position: int | None = None

    @property
    def position(self) -> int | None:
        return self._position if self.active else None

    def _activate(self) -> str:
        self._position = self._positions.position()
        return f"from position {self._position}"

    def _work(self) -> None:
        while not self._stop.is_set():
            self._lock.check()
            head = self.log.head()
            self._progressed = True
            assert self._position is not None
            if head > self._position:
                for page in self.log.pages(
                    after=self._position, upto=head, page_size=self.page_size,
                    topics=REQUESTED_TOPICS,
                ):  # fmt: skip
                    jobs = []
                    for notification_id, event in zip(page.ids, page.events, strict=True):
                        assert isinstance(event, LessonSlot.LessonRequested)
                        jobs.append(Job.of(event, notification_id))
                    self.jobs.add(jobs)  # committed before the position passes them
                    self._advance(page.position)
                    if self._stop.is_set():
                        return
                self._advance(head)
            else:
                self._wakeup.wait(IDLE_RECHECK_SECONDS)

    def _advance(self, position: int) -> None:
        self._lock.check()
        self._positions.advance(position)
        self._position = position


class Claimer:
    """Claims jobs while this process has room and runs them in the runtime, in a thread
    of its own (`start`/`stop`); renews its leases, finishes or releases each job."""

    def __init__(
        self,
        ledger: LessonLedger,
        generator: LessonGenerator,
        jobs: JobQueue,
        wakeup: Wakeup,
        runtime: Runtime,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        actor: str = WORKER_ACTOR,
        budget: Budget | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.jobs = jobs
        self.runtime = runtime
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.holder = f"{gethostname()}:{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._draining = threading.Event()
        self.attempts = Attempts(
            ledger, generator, actor, self._stop, runtime, budget, calls=concurrency
        )
        self.attempts.on_call_over = self._call_over
        self.holds = 4 * concurrency
        """Jobs held at most, calling or being recorded (a bound for a slow database)."""
        self._wakeup = wakeup
        self._signal = threading.Event()
        """Set when there may be jobs to claim, or room for them."""
        self._held: dict[int, Future[Outcome]] = {}
        self._before_call: set[int] = set()
        """Held jobs that have not yet had their call: `concurrency` at most, so that a
        process claims no more than it can start (the others claim the rest)."""
        self._held_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.peak_in_flight = 0

    @property
    def counts(self) -> Counter[str]:
        return self.attempts.counts

    @property
    def in_flight(self) -> int:
        with self._held_lock:
            return len(self._held)

    def start(self) -> None:
        log.info(
            "generation claimer started",
            extra={"holder": self.holder, "concurrency": self.concurrency},
        )
        self._stop.clear()
        self._draining.clear()
        self._thread = threading.Thread(target=self.run, name="generation-claimer", daemon=True)
        self._thread.start()
        listener = threading.Thread(target=self._listen, name="generation-listener", daemon=True)
        listener.start()

    def _listen(self) -> None:
        """Turn the queue's notifications into the claimer's signal."""
        with suppress(Exception):  # no session to listen on yet: `wait` connects again
            self._wakeup.open()
        while not self._draining.is_set():
            try:
                self._wakeup.wait(self.poll_seconds)
            except Exception:  # the listening connection failed: polling goes on
                if self._draining.wait(self.poll_seconds):
                    break
            self._signal.set()

    def request_stop(self) -> None:
        """Claim nothing more; what is in flight may finish (see `stop`)."""
        self._draining.set()
        self._wakeup.wake()
        self._signal.set()

    def stop(self, grace: float) -> bool:
        """Claim nothing more, let what is in flight finish for up to `grace` seconds,
        then leave the rest unfinished (released at once); True when all ended."""
        self.request_stop()
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.runtime.cancel_all()
        deadline = time.monotonic() + 5.0
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._thread is not None:
            self._thread.join(5.0)
        self._wakeup.close()
        return not self.in_flight

    def run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        renewed = time.monotonic()
        while not self._draining.is_set():
            try:
                with self._held_lock:
                    room = min(
                        self.concurrency - len(self._before_call), self.holds - len(self._held)
                    )
                claimed = self._claim(room) if room > 0 else 0
                if time.monotonic() - renewed >= self.lease_seconds / 3:
                    self._renew()
                    renewed = time.monotonic()
                retry = FIRST_RETRY_SECONDS
                if claimed and claimed == room:
                    continue  # there may be more, and room for them
                self._signal.wait(min(self.poll_seconds, self.lease_seconds / 3))
                self._signal.clear()
            except Exception as error:  # a claimer outlives outages; it reports them
                self.last_error = f"{type(error).__name__}: {one_line(error)}"
                log.warning("generation claimer error", extra={"error": self.last_error})
                if self._draining.wait(retry):
                    break
                retry = min(retry * 2, MAX_RETRY_SECONDS)
        # Draining: keep the leases of what is still in flight until it is over.
        while self.in_flight and not self._stop.wait(self.lease_seconds / 3):
            try:
                self._renew()
            except Exception as error:
                log.warning("generation claimer error", extra={"error": one_line(error)})

    def _claim(self, room: int) -> int:
        jobs = self.jobs.claim(self.holder, room, self.lease_seconds)
        for job in sorted(jobs, key=lambda job: (job.priority, job.notification_id)):
            with self._held_lock:  # before it runs: it may be over at once
                self._before_call.add(job.notification_id)
                future = self.runtime.submit(self._run(job))
                self._held[job.notification_id] = future
                self.peak_in_flight = max(self.peak_in_flight, len(self._held))
        return len(jobs)

    def _call_over(self, job: Job) -> None:
        with self._held_lock:
            if job.notification_id not in self._before_call:
                return
            self._before_call.discard(job.notification_id)
        self._signal.set()  # room for another

    def _renew(self) -> None:
        with self._held_lock:
            held = list(self._held)
        if held:
            self.jobs.renew(self.holder, held, self.lease_seconds)

    async def _run(self, job: Job) -> Outcome:
        outcome = await self.attempts.process(job)
        try:
            await self.runtime.db(lambda: self._settle_job(job, outcome))
        except Exception as error:  # the lease runs out; the next holder finds it decided
            log.warning("generation job not closed", extra={"error": one_line(error)})
        finally:
            with self._held_lock:
                self._held.pop(job.notification_id, None)
            self._signal.set()  # room for another
        return outcome

    def _settle_job(self, job: Job, outcome: Outcome) -> None:
        if outcome == "unfinished":
            self.jobs.release(self.holder, [job.notification_id])
        else:
            self.jobs.finish(job.notification_id, outcome)
