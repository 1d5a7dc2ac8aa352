"""One active runner per job across processes, the others standing by: the loop that the
read model's follower and the generation worker share.

A runner becomes active by taking its runner lock (projections/view.py: a PostgreSQL
advisory lock, a file lock on SQLite; both freed when the holder dies, SIGKILL
included); while another holds it, it waits and takes over the moment it is free.
Active, it works until stopped. An error (a lost connection, a database restart)
does not end it: it lets go of the lock, reports the error, waits (1 s, doubling to
30 s; back to 1 s once it has made progress again) and starts over.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from domain.errors import one_line
from projections.view import RunnerLock, Wakeup

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0

OnState = Callable[[str, str], None]
"""Told (state, detail) when a runner's state changes: "waiting" (another runner is
active), "active", "error", "stopped"."""


class ActiveRunner(ABC):
    """Runs `_work()` while it holds `lock`, in a daemon thread (`start`/`stop`) or in the
    caller's (`run`, stopped by `request_stop()`, e.g. from a signal handler)."""

    name = "runner"
    """Names the thread and the log lines."""
    logger = logging.getLogger("lesson_ledger.runner")

    def __init__(
        self, lock: RunnerLock, wakeup: Wakeup, *, on_state: OnState | None = None
    ) -> None:
        self._lock = lock
        self._wakeup = wakeup
        self._on_state = on_state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progressed = False
        self.state = "stopped"
        self.last_error: str | None = None

    # What a runner does.

    @abstractmethod
    def _activate(self) -> str:
        """Start working, now that the lock is held; says from where (for the log)."""

    @abstractmethod
    def _work(self) -> None:
        """Work until idle (it is called again) or stopped; set `_progressed` on progress."""

    def _deactivate(self) -> None:  # noqa: B027 - optional: only the worker holds work
        """Finish what is in hand before the lock goes (called without the lock too)."""

    # Running.

    @property
    def active(self) -> bool:
        """Whether this runner is the one working now."""
        return self._lock.held

    def start(self) -> None:
        """Run in a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask `run()` to return soon, without waiting for it (safe in a signal handler)."""
        self._stop.set()
        self._wakeup.wake()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop and let another runner take over; waits for the thread up to `timeout`.
        True when it has ended."""
        self.request_stop()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """Look at the log now (e.g. right after this process recorded a command)."""
        self._wakeup.wake()

    def run(self) -> None:
        """Work until `request_stop()`; outages are logged and retried, not raised."""
        retry = FIRST_RETRY_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    if not self._lock.held and not self._become_active():
                        break
                    self._progressed = False
                    self._work()
                    retry = FIRST_RETRY_SECONDS
                except Exception as error:  # a runner outlives outages; it reports them
                    self.last_error = f"{type(error).__name__}: {one_line(error)}"
                    self._set_state("error", self.last_error)
                    self._let_go()
                    if self._progressed:  # it worked for a while: a new outage
                        retry = FIRST_RETRY_SECONDS
                    self._stop.wait(retry)
                    retry = min(retry * 2, MAX_RETRY_SECONDS)
        finally:
            self._let_go()
            self._wakeup.close()
            self._set_state("stopped", "")

    def _become_active(self) -> bool:
        if not self._lock.acquire(wait=False):
            self._set_state("waiting", f"another {self.name} is active")
            if not self._lock.acquire(wait=True, stop=self._stop):
                return False
        self._wakeup.open()  # before reading, so that no event recorded meanwhile is missed
        self._set_state("active", self._activate())
        return True

    def _let_go(self) -> None:
        self._deactivate()
        self._lock.release()

    def _set_state(self, state: str, detail: str) -> None:
        if state != self.state or state == "error":
            self.logger.log(
                logging.WARNING if state == "error" else logging.INFO,
                f"{self.name} {state}",
                extra={"state": state, "detail": detail},
            )
        self.state = state
        if self._on_state is not None:
            self._on_state(state, detail)
