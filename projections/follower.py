"""The live runner: keeps the lessons table current, in a thread of a server or as the
`lesson-ledger projections follow` process.

At most one follower per database is active (the runner lock); the others wait and
the first to get the lock takes over when the active one stops or dies. The active
follower catches up a page per transaction, then waits for news: LISTEN/NOTIFY on
PostgreSQL, polling on SQLite (whose recorder cannot notify), or `wake()` from this
process. Errors (a lost connection, a database restart) do not end it: it lets go of
the lock, reports the error, waits (1 s, doubling to 30 s) and starts again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from projections.log import DEFAULT_PAGE_SIZE, EventLog, Page
from projections.runner import advance
from projections.view import LIVE, LessonsView

logger = logging.getLogger(__name__)
IDLE_RECHECK_SECONDS = 5.0
"""An idle follower looks at the log at least this often, notification or not."""
_FIRST_RETRY_SECONDS = 1.0
_MAX_RETRY_SECONDS = 30.0

OnState = Callable[[str, str], None]
"""Told (state, detail) when the follower's state changes: "waiting" (another runner is
active), "active", "error", "stopped"."""


class ProjectionFollower:
    """Follows the log into the lessons table, in a background thread (`start`/`stop`)
    or in the caller's (`run`)."""

    def __init__(
        self,
        view: LessonsView,
        log: EventLog,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        on_page: Callable[[Page], None] | None = None,
        on_state: OnState | None = None,
    ) -> None:
        self.view = view
        self.log = log
        self.page_size = page_size
        self._on_page = on_page
        self._on_state = on_state
        self._lock = view.runner_lock(LIVE)
        self._wakeup = view.wakeup()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "stopped"
        self.position: int | None = None
        self.last_error: str | None = None

    @property
    def active(self) -> bool:
        """Whether this follower is the one writing the table now."""
        return self._lock.held

    def start(self) -> None:
        """Run in a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="lessons-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and let another runner take over; waits for the thread up to `timeout`."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def request_stop(self) -> None:
        """Ask `run()` to return soon, without waiting for it (safe in a signal handler)."""
        self._stop.set()
        self._wakeup.wake()

    def wake(self) -> None:
        """Look at the log now (e.g. right after this process recorded a command)."""
        self._wakeup.wake()

    def run(self) -> None:
        """Follow until `stop()` is called (from another thread or a signal handler)."""
        retry = _FIRST_RETRY_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    if not self._lock.held and not self._become_active():
                        break
                    self._follow_once()
                    retry = _FIRST_RETRY_SECONDS
                except Exception as error:  # a runner outlives outages; it reports them
                    self.last_error = f"{type(error).__name__}: {_one_line(error)}"
                    self._set_state("error", self.last_error)
                    self._let_go()
                    self._stop.wait(retry)
                    retry = min(retry * 2, _MAX_RETRY_SECONDS)
        finally:
            self._let_go()
            self._wakeup.close()
            self._set_state("stopped", "")

    def _become_active(self) -> bool:
        if not self._lock.acquire(wait=False):
            self._set_state("waiting", "another runner is active")
            if not self._lock.acquire(wait=True, stop=self._stop):
                return False
        self._wakeup.open()
        self.position = self.view.position(LIVE)
        self._set_state("active", f"following from position {self.position}")
        return True

    def _follow_once(self) -> None:
        self._lock.check()
        self.position = advance(
            self.view,
            self.log,
            LIVE,
            page_size=self.page_size,
            on_page=self._page_done,
            stop=self._stop,
        )
        self._wakeup.wait(IDLE_RECHECK_SECONDS)

    def _page_done(self, page: Page) -> None:
        self.position = page.position
        if self._on_page is not None:
            self._on_page(page)

    def _let_go(self) -> None:
        self._lock.release()

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        logger.log(
            logging.WARNING if state == "error" else logging.INFO,
            "lessons follower %s%s",
            state,
            f": {detail}" if detail else "",
        )
        if self._on_state is not None:
            self._on_state(state, detail)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
