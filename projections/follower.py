"""The live runner: keeps the lessons table current, in a thread of a server or as the
`lesson-ledger projections follow` process.

At most one follower per database is active (projections/active_runner.py); the others
wait, and the first to get the lock takes over when the active one stops or dies. The
active follower catches up a page per transaction, then waits for news: LISTEN/NOTIFY
on PostgreSQL, polling on SQLite (whose recorder cannot notify), or `wake()` from this
process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from projections import lessons
from projections.active_runner import ActiveRunner, OnState
from projections.log import DEFAULT_PAGE_SIZE, EventLog, Page
from projections.rebuild import REBUILD_PAGE_SIZE, rebuild
from projections.runner import advance
from projections.view import LIVE, LessonsView

IDLE_RECHECK_SECONDS = 5.0
"""An idle follower looks at the log at least this often, notification or not."""
PACE_SECONDS = 0.1
"""The least time between two looks of an active follower that found news: the read
model lags the log by at most this much more under load."""


class ProjectionFollower(ActiveRunner):
    """Follows the log into the lessons table."""

    name = "lessons follower"
    logger = logging.getLogger(__name__)

    def __init__(
        self,
        view: LessonsView,
        log: EventLog,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        on_page: Callable[[Page], None] | None = None,
        on_state: OnState | None = None,
    ) -> None:
        super().__init__(view.runner_lock(LIVE), view.wakeup(), on_state=on_state)
        self.view = view
        self.log = log
        self.page_size = page_size
        self._on_page = on_page
        self.position: int | None = None

    def _activate(self) -> str:
        if self.view.shape(LIVE) != lessons.SHAPE:
            # The first start of a release whose rows have another shape: rebuild them in a
            # shadow table while the old ones stay untouched (and unread), then swap.
            rebuild(self.view, self.log, page_size=REBUILD_PAGE_SIZE)
        self.position = self.view.position(LIVE)
        return f"following from position {self.position}"

    def _work(self) -> None:
        self._lock.check()
        self.position = advance(
            self.view,
            self.log,
            LIVE,
            page_size=self.page_size,
            on_page=self._page_done,
            stop=self._stop,
            check=self._lock.check,
        )
        if self._progressed:
            # A page per transaction costs about as much for one event as for hundreds:
            # under a steady stream of commands, fewer and fuller pages.
            self._stop.wait(PACE_SECONDS)
        self._wakeup.wait(IDLE_RECHECK_SECONDS)

    def _page_done(self, page: Page) -> None:
        self._progressed = True
        self.position = page.position
        if self._on_page is not None:
            self._on_page(page)
