"""Moving a table forward through the log, a page per transaction: the loop that
catch-up, live follow and rebuild share.

Why not the library's ProjectionRunner: it commits one transaction per event (about
1,100 events/s on PostgreSQL, far too slow to rebuild), it cannot run on SQLite (no
subscriptions), and it tracks positions under the upstream application's name, which
on SQLite's single `tracking` table would collide with every other follower of the
ledger. The library's pieces are used instead: the application recorder's
`select_notifications` to read pages, the mapper to decode them, and tracking recorders
(see projections/view.py) to store each page's rows with its position.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from projections.lessons import ProjectionError
from projections.log import DEFAULT_PAGE_SIZE, EventLog, Page
from projections.view import LIVE, LessonsView, RunnerLock, Target

OnPage = Callable[[Page], None]


class RunnerBusy(ProjectionError):
    """Another runner holds the lock this work needs (e.g. a second rebuild)."""


@dataclass(frozen=True)
class CatchUpResult:
    """What a catch-up did: from where, to where, how many events it applied."""

    start: int
    position: int
    events: int
    by_other_runner: bool


def advance(
    view: LessonsView,
    log: EventLog,
    target: Target,
    *,
    upto: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    on_page: OnPage | None = None,
    stop: threading.Event | None = None,
    check: Callable[[], None] | None = None,
) -> int:
    """Apply the log's pages to the target from its stored position until the end of the
    log (or `upto`); return the position reached. `check` runs before each page (a
    runner's `RunnerLock.check`: a lease that could not be renewed stops the work).

    When a page finds the stored position moved (a rebuild swapped the table in), it
    goes on from the stored position: nothing is applied twice, nothing skipped.
    """
    position = _stored(view, target)
    while True:
        moved = False
        for page in log.pages(after=position, upto=upto, page_size=page_size):
            if stop is not None and stop.is_set():
                return position
            if check is not None:
                check()
            if not view.apply_page(target, position, page):
                position = _stored(view, target)
                moved = True
                break
            position = page.position
            if on_page is not None:
                on_page(page)
        if not moved:
            return position


def catch_up(
    view: LessonsView,
    log: EventLog,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    on_page: OnPage | None = None,
    on_wait: Callable[[int], None] | None = None,
    lock: RunnerLock | None = None,
) -> CatchUpResult:
    """Bring the live table up to the head of the log as it is now, then return.

    When another runner is active (a follower), this one does not compete: it waits
    until that runner has reached the head (`on_wait` is told the target first).
    """
    lock = lock or view.runner_lock(LIVE)
    start = _stored(view, LIVE)
    head = log.head()
    if not lock.acquire(wait=False):
        if on_wait is not None:
            on_wait(head)
        if _left_to_other_runner(view, lock, head):
            return CatchUpResult(start, _stored(view, LIVE), 0, by_other_runner=True)
    try:
        applied = 0

        def count(page: Page) -> None:
            nonlocal applied
            applied += len(page.events)
            if on_page is not None:
                on_page(page)

        position = advance(view, log, LIVE, upto=head, page_size=page_size, on_page=count)
        return CatchUpResult(start, position, applied, by_other_runner=False)
    finally:
        lock.release()


def _left_to_other_runner(view: LessonsView, lock: RunnerLock, head: int) -> bool:
    """Wait while the active runner reaches `head` (True); False when it went away and
    this one took the lock to finish the work itself."""
    while _stored(view, LIVE) < head:
        if lock.acquire(wait=False):
            return False
        _wait_for_live_position(view, head, timeout=1.0)
    return True


def _wait_for_live_position(view: LessonsView, position: int, timeout: float) -> bool:
    """Poll the live position until it reaches `position` or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while _stored(view, LIVE) < position:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.1)
    return True


def _stored(view: LessonsView, target: Target) -> int:
    position = view.position(target)
    if position is None:
        raise ProjectionError(f"the {target.table} table has no stored position")
    return position
