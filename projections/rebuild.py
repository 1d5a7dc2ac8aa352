"""Rebuild without downtime: fill `lessons_shadow` from the first event while the live
table keeps answering reads (and its follower keeps following), then swap the two in
one transaction.

Each shadow page commits its rows with the shadow's own position ("lessons_shadow"),
so an interrupted rebuild leaves a consistent, partial shadow and an untouched live
table: `rebuild()` resumes it, `rebuild(restart=True)` starts it over. Only one
rebuild runs at a time (the shadow's runner lock). The shadow's position, and when
the rebuild started, are stored, so any process's `status` shows the progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from eventsourcing.persistence import OperationalError

from projections.log import EventLog, Page
from projections.runner import RunnerBusy, advance
from projections.view import SHADOW, LessonsView

REBUILD_PAGE_SIZE = 1000
SWAP_ATTEMPTS = 5
_MAX_FILL_ROUNDS = 5

OnProgress = Callable[[int, int], None]
"""Told (shadow position, head of the log) after each page."""


@dataclass(frozen=True)
class RebuildResult:
    """Where the rebuilt table took over, and what the rebuild did."""

    position: int
    resumed_from: int | None
    events: int
    seconds: float


def rebuild(
    view: LessonsView,
    log: EventLog,
    *,
    restart: bool = False,
    page_size: int = REBUILD_PAGE_SIZE,
    on_progress: OnProgress | None = None,
    on_start: Callable[[int, bool], None] | None = None,
    before_swap_commit: Callable[[], None] | None = None,
) -> RebuildResult:
    """Rebuild the lessons table from the events and swap it in; see the module docstring.

    `on_start(position, resumed)` is told where the fill starts; `before_swap_commit`
    is a test hook run inside the swap's transaction. Raises RunnerBusy when another
    rebuild is running.
    """
    started = time.monotonic()
    lock = view.runner_lock(SHADOW)
    if not lock.acquire(wait=False):
        raise RunnerBusy("a rebuild of the lessons table is already running")
    try:
        start, resumed = view.prepare_shadow(restart=restart)
        if on_start is not None:
            on_start(start, resumed)
        position = start
        applied = 0
        head = log.head()

        def progress(page: Page) -> None:
            nonlocal applied
            applied += len(page.events)
            if on_progress is not None:
                on_progress(page.position, max(head, page.position))

        # Fill up to the head as it was; writers keep going meanwhile, so look again,
        # a few times at most: the swap brings the shadow up to the live table anyway.
        for _ in range(_MAX_FILL_ROUNDS):
            position = advance(view, log, SHADOW, upto=head, page_size=page_size, on_page=progress)
            head = log.head()
            if head - position <= page_size:
                break
        new_position = _swap(view, log, page_size, before_swap_commit)
        if on_progress is not None:
            on_progress(new_position, max(head, new_position))
        return RebuildResult(
            position=new_position,
            resumed_from=start if resumed else None,
            events=applied,
            seconds=time.monotonic() - started,
        )
    finally:
        lock.release()


def _swap(
    view: LessonsView, log: EventLog, page_size: int, before_commit: Callable[[], None] | None
) -> int:
    """Swap, trying again when the swap's bounded wait for a table lock ran out (a long
    reader on PostgreSQL, a verify for one): the readers queued behind it go on meanwhile."""
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            return view.swap_in_shadow(log, page_size, before_commit)
        except OperationalError:
            if attempt == SWAP_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")
