"""The generation worker on one process: follows the log and has every requested attempt
generated once (on SQLite, where one process is enough; on PostgreSQL several processes
share the work through a job queue instead: projections/generation/queue.py).

For each requested attempt the worker checks the slot's current state, asks the generator
for the lesson and records `record_generation` or `record_failure` (attempts.py), as a
task of the runtime's event loop, up to `concurrency` at once, interactive requests first.
One dispatcher is active across processes (the runner lock); its position only moves past
finished attempts; a database failure leaves the attempt unfinished and retried. Why this
gives each attempt once across restarts and processes:
docs/decisions/0041-each-attempt-generated-once.md.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from functools import partial
from typing import Protocol

from eventsourcing.utils import get_topic

from domain.errors import one_line
from domain.ledger import LessonLedger
from domain.lesson import LessonSlot
from projections.active_runner import ActiveRunner
from projections.generation.attempts import Attempts, Outcome
from projections.generation.budget import Budget
from projections.generation.jobs import Job
from projections.generation.port import LessonGenerator
from projections.generation.runtime import Runtime
from projections.generation.window import Window
from projections.log import EventLog
from projections.view import RunnerLock, Wakeup

log = logging.getLogger("lesson_ledger.worker")

TRACKING_NAME = "generation_worker"
REQUESTED_TOPICS = [get_topic(LessonSlot.OpenedByRequest), get_topic(LessonSlot.LessonRequested)]
DEFAULT_CONCURRENCY = 64
"""A calendar week's batch (40 lessons) in flight at once."""
DEFAULT_PAGE_SIZE = 200
IDLE_RECHECK_SECONDS = 5.0
"""An idle dispatcher looks at the log at least this often, notification or not."""
WORKER_ACTOR = "generation-worker"
_SLOT_POLL_SECONDS = 0.2
MAX_PENDING = 5000
"""Jobs read ahead of the free slots, at most (a long backlog is read as slots free)."""


class PositionStore(Protocol):
    """Where the worker's position lives (adapters/worker.py: a tracking recorder)."""

    def position(self) -> int:
        """The stored position (0 before the first)."""
        ...

    def advance(self, position: int) -> None:
        """Store `position` if it is ahead of the stored one; otherwise do nothing."""
        ...


class GenerationWorker(ActiveRunner):
    """Follows the log and generates requested attempts, `concurrency` at once, as tasks
    of `runtime`'s event loop.

    `state` is "stopped", "waiting" (another worker is the dispatcher), "active" or
    "error"; `counts` counts job outcomes.
    """

    name = "generation worker"
    logger = log

    def __init__(
        self,
        ledger: LessonLedger,
        log: EventLog,
        generator: LessonGenerator,
        positions: PositionStore,
        lock: RunnerLock,
        wakeup: Wakeup,
        runtime: Runtime,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        page_size: int = DEFAULT_PAGE_SIZE,
        actor: str = WORKER_ACTOR,
        budget: Budget | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        super().__init__(lock, wakeup, on_state=on_state)
        self.ledger = ledger
        self.log = log
        self.generator = generator
        self.runtime = runtime
        self.concurrency = concurrency
        self.page_size = page_size
        self.actor = actor
        self.attempts = Attempts(
            ledger, generator, actor, self._stop, runtime, budget, calls=concurrency
        )
        self._positions = positions
        # `concurrency` calling the model, half as many again checked or recorded meanwhile.
        self._slots = threading.BoundedSemaphore(concurrency + max(1, concurrency // 2))
        self._room = threading.Event()
        self._pending: list[tuple[int, int, Job]] = []
        """Jobs read from the log, waiting for a slot: a heap by priority, then position."""
        self._in_flight: set[Future[Outcome]] = set()
        self._in_flight_lock = threading.Lock()
        self._window: Window | None = None
        self._saved = 0
        self._save_lock = threading.Lock()

    @property
    def counts(self) -> Counter[str]:
        return self.attempts.counts

    def wake(self) -> None:
        super().wake()
        self._room.set()

    @property
    def position(self) -> int | None:
        """The finished position while active, else None."""
        window = self._window
        return window.position if window is not None else None

    # The dispatcher.

    def _activate(self) -> str:
        position = self._positions.position()
        self._saved = position
        self._window = Window(position)
        self._pending = []
        return f"from position {position}, concurrency {self.concurrency}"

    def _work(self) -> None:
        window = self._window
        assert window is not None
        while not self._stop.is_set():
            self._lock.check()
            head = self.log.head()
            self._progressed = True
            if head > window.read_upto and len(self._pending) < MAX_PENDING:
                self._read(window, head)
                self._save_position()
            self._hand_out()
            if self._pending:
                # Every slot busy: look again when one frees (or new requests may have
                # come in that go before those waiting).
                self._room.wait(_SLOT_POLL_SECONDS)
                self._room.clear()
            elif head <= window.read_upto:
                self._wakeup.wait(IDLE_RECHECK_SECONDS)

    def _read(self, window: Window, head: int) -> None:
        """Read the requests after the window up to `head` (up to MAX_PENDING waiting),
        into the jobs waiting for a slot."""
        pages = self.log.pages(
            after=window.read_upto, upto=head, page_size=self.page_size, topics=REQUESTED_TOPICS
        )
        for page in pages:
            for notification_id, event in zip(page.ids, page.events, strict=True):
                assert isinstance(event, LessonSlot.LessonRequested)
                job = Job.of(event, notification_id)
                # Unfinished from now on: the position does not pass a request that
                # waits behind others of higher priority.
                window.started(notification_id)
                heapq.heappush(self._pending, (job.priority, job.notification_id, job))
            window.read(page.position)
            if len(self._pending) >= MAX_PENDING or self._stop.is_set():
                return
        window.read(head)

    def _hand_out(self) -> None:
        """Start waiting jobs, interactive first, then in log order, while slots are free."""
        while self._pending and not self._stop.is_set():
            if not self._slots.acquire(blocking=False):
                return
            _, _, job = heapq.heappop(self._pending)
            future = self.runtime.submit(self.attempts.process(job))
            with self._in_flight_lock:
                self._in_flight.add(future)
            future.add_done_callback(partial(self._finished, job))

    def _finished(self, job: Job, future: Future[Outcome]) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(future)
        self._slots.release()
        self._room.set()
        outcome = "unfinished" if future.cancelled() else future.result()
        window = self._window
        if outcome != "unfinished" and window is not None:
            window.finished(job.notification_id)
            # In the database pool: this callback runs in the loop's thread.
            self.runtime.loop.run_in_executor(None, self._save_position)

    def _deactivate(self) -> None:
        """Let the tasks finish what they hold before the lock goes: releasing it earlier
        would let another worker hand out the same attempts."""
        while True:
            with self._in_flight_lock:
                pending = list(self._in_flight)
            if not pending:
                break
            for future in pending:
                # A cancelled one is unfinished, and the window knows.
                with suppress(BaseException):
                    future.result()
        if self._window is not None:
            self._save_position()
        self._window = None

    def _save_position(self) -> None:
        window = self._window
        if window is None:
            return
        with self._save_lock:
            position = window.position
            if position <= self._saved:
                return
            try:
                self._positions.advance(position)
            except Exception as error:  # the next save stores it; the work is not lost
                log.warning(
                    "generation position not saved",
                    extra={"position": position, "error": one_line(error)},
                )
                return
            self._saved = position
