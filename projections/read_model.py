"""The lessons read model: what the HTTP API and the CLI use.

Open it with `adapters.lessons_view.open_read_model(url)` (or pass the server's ledger:
`open_read_model(url, ledger=ledger)`), then:

Queries (plain frozen dataclasses; `LessonRow.as_json()` gives JSON-ready dicts):
- `get_lesson(lesson_id) -> LessonRow | None`
- `list_lessons(provider_id=, school_id=, date_from=, date_to=, status=, limit=, cursor=)
  -> LessonPage(items, next_cursor)`: ordered by lesson_date, time_slot, lesson_id;
  pass `next_cursor` back for the next page (None: no more). Dates are inclusive.
  A provider's week (`provider_id` + `date_from`/`date_to`) is served by the index
  `lessons_provider_week_idx`. Bad filters raise `InvalidLessonQuery` (a ValueError
  naming the parameter).

Read-your-writes: `wait_for(position, timeout=5.0) -> bool`: True once the table has
applied every event up to `position` (a command's `position`), False when the timeout
passed first. Notification ids have gaps, so "reached" means the stored position is
>= `position`, never equal to it.

Runners:
- `start_following()` -> a `ProjectionFollower` running in a daemon thread; call its
  `stop()` on shutdown. One follower per database is active; others wait to take over.
  Call `wake()` after a command to have this process's follower look at once.
- `catch_up()`, `rebuild()`, `verify()`, `status()`, as the CLI runs them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper

from domain.keys import canonical_lesson_date, canonical_provider_id, canonical_school_id
from projections import lessons
from projections.active_runner import OnState
from projections.follower import ProjectionFollower
from projections.lessons import STATUSES, LessonRow
from projections.log import DEFAULT_PAGE_SIZE, EventLog, Page
from projections.rebuild import REBUILD_PAGE_SIZE, OnProgress, RebuildResult, rebuild
from projections.runner import CatchUpResult, OnPage, RunnerBusy, catch_up
from projections.status import ProjectionStatus, lessons_status
from projections.verify import VerifyReport, verify
from projections.view import LIVE, SHADOW, LessonQuery, LessonsView, ShapeOutdated

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class InvalidLessonQuery(ValueError):
    """A query parameter is invalid; `field` names it (for a 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class LessonPage:
    """One page of a listing; `next_cursor` asks for the next one (None: last page)."""

    items: list[LessonRow]
    next_cursor: str | None


class LessonsReadModel:
    """Queries over the `lessons` table, and the runners that keep it current."""

    def __init__(
        self,
        view: LessonsView,
        log: EventLog,
        mapper: Mapper[Any],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.view = view
        self.log = log
        self.mapper = mapper
        self._on_close = on_close
        self._progress = threading.Condition()
        self._followers: list[ProjectionFollower] = []
        self._shape_is_current = False

    # Queries.

    def get_lesson(self, lesson_id: UUID | str) -> LessonRow | None:
        """The lesson's row, or None when the table has none (yet: see `wait_for`)."""
        self._require_current_shape()
        return self.view.get_row(_lesson_id(lesson_id))

    def list_lessons(
        self,
        *,
        provider_id: str | UUID | None = None,
        school_id: str | None = None,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LessonPage:
        """Lessons matching every given filter, a page at a time (see the module doc)."""
        first = _checked("date_from", canonical_lesson_date, date_from)
        last = _checked("date_to", canonical_lesson_date, date_to)
        if first is not None and last is not None and last < first:
            # Swapped dates would match nothing: said, not answered with an empty page.
            raise InvalidLessonQuery("date_to", f"{last} is before the first date ({first})")
        query = LessonQuery(
            provider_id=_checked("provider_id", canonical_provider_id, provider_id),
            school_id=_checked("school_id", canonical_school_id, school_id),
            date_from=first,
            date_to=last,
            status=_status(status),
            after=None if cursor is None else decode_cursor(cursor),
            limit=_limit(limit) + 1,  # one more, to know whether there is a next page
        )
        self._require_current_shape()
        rows = self.view.list_rows(query)
        if len(rows) <= limit:
            return LessonPage(rows, None)
        return LessonPage(rows[:limit], encode_cursor(rows[limit - 1]))

    # Positions.

    def position(self) -> int:
        """The position the table has applied every event up to."""
        return self.view.position(LIVE) or 0

    def head(self) -> int:
        """The id of the last event recorded."""
        return self.log.head()

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Wait until the table has reached `position` (stored position >= it): True, or
        False when `timeout` seconds passed first. Wakes this process's follower."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        for follower in self._followers:
            follower.wake()
        while self.position() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # A follower in this process says when it committed a page; one elsewhere
            # is polled for, backing off to 50 ms.
            with self._progress:
                self._progress.wait(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return True

    def _require_current_shape(self) -> None:
        """ShapeOutdated while the table holds rows of another release's shape (until the
        upgrade's rebuild swaps the new ones in): never serve the old shape."""
        if self._shape_is_current:
            return
        found = self.view.shape(LIVE)
        if found != lessons.SHAPE:
            raise ShapeOutdated(LIVE.table, found)
        self._shape_is_current = True

    def upgrade(self, *, on_progress: OnProgress | None = None) -> RebuildResult | None:
        """Rebuild the table if it holds rows of another release's shape (None when it is
        current): what the first follower of a new release does before following."""
        if self.view.shape(LIVE) == lessons.SHAPE:
            return None
        return self.rebuild(on_progress=on_progress)

    def status(self) -> list[ProjectionStatus]:
        """Every projection's status (for now: the lessons table)."""
        return [lessons_status(self.view, self.log)]

    # Runners.

    def follower(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        on_state: OnState | None = None,
        on_page: OnPage | None = None,
    ) -> ProjectionFollower:
        """A follower of this read model (not started: `start()` or `run()` it)."""

        def page_done(page: Page) -> None:
            with self._progress:
                self._progress.notify_all()
            if on_page is not None:
                on_page(page)

        follower = ProjectionFollower(
            self.view, self.log, page_size=page_size, on_page=page_done, on_state=on_state
        )
        self._followers.append(follower)
        return follower

    def start_following(self, **options: Any) -> ProjectionFollower:
        """A follower running in a daemon thread (for the server); `stop()` it on exit."""
        follower = self.follower(**options)
        follower.start()
        return follower

    def wake(self) -> None:
        """Have this process's followers look at the log now."""
        for follower in self._followers:
            follower.wake()

    def catch_up(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        on_page: OnPage | None = None,
        on_wait: Callable[[int], None] | None = None,
    ) -> CatchUpResult:
        """Bring the table up to the head of the log as it is now (see runner.catch_up),
        after rebuilding it if it holds another release's shape."""
        self.upgrade()
        return catch_up(self.view, self.log, page_size=page_size, on_page=on_page, on_wait=on_wait)

    def rebuild(
        self,
        *,
        restart: bool = False,
        page_size: int = REBUILD_PAGE_SIZE,
        on_progress: OnProgress | None = None,
        on_start: Callable[[int, bool], None] | None = None,
        before_swap_commit: Callable[[], None] | None = None,
    ) -> RebuildResult:
        """Rebuild the table from the events without downtime (see projections.rebuild)."""
        return rebuild(
            self.view,
            self.log,
            restart=restart,
            page_size=page_size,
            on_progress=on_progress,
            on_start=on_start,
            before_swap_commit=before_swap_commit,
        )

    def rebuilding(self) -> bool:
        """Whether a rebuild of the table is running now, in any process."""
        return self.view.runner_lock(SHADOW).is_taken()

    def abandon_rebuild(self) -> None:
        """Drop an interrupted rebuild's shadow table (the live table is untouched).
        Raises RunnerBusy while a rebuild is running."""
        lock = self.view.runner_lock(SHADOW)
        if not lock.acquire(wait=False):
            raise RunnerBusy("a rebuild of the lessons table is running: it cannot be dropped")
        try:
            self.view.abandon_shadow()
        finally:
            lock.release()

    def verify(self) -> VerifyReport:
        """Fold the events afresh and report every row of the table that differs."""
        return verify(self.view, self.mapper)

    def close(self) -> None:
        """Stop this process's followers and close the connections."""
        for follower in self._followers:
            follower.stop()
        self._followers.clear()
        self.view.close()
        if self._on_close is not None:
            self._on_close()


def encode_cursor(row: LessonRow) -> str:
    """The opaque cursor after `row`: its sort key, as URL-safe text."""
    key = json.dumps([row.lesson_date.isoformat(), row.time_slot, str(row.lesson_id)])
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, str, UUID]:
    """The sort key a cursor holds; InvalidLessonQuery when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        day, slot, lesson_id = json.loads(text)
        return date.fromisoformat(day), str(slot), UUID(lesson_id)
    except (ValueError, TypeError, RecursionError):
        raise InvalidLessonQuery("cursor", "is not a cursor this API returned") from None


def _checked(field: str, check: Callable[[Any], Any], value: object) -> Any:
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as invalid:
        raise InvalidLessonQuery(field, str(invalid)) from None


def _status(status: str | None) -> str | None:
    if status is not None and status not in STATUSES:
        raise InvalidLessonQuery("status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    return status


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidLessonQuery("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _lesson_id(lesson_id: UUID | str) -> UUID:
    if isinstance(lesson_id, UUID):
        return lesson_id
    try:
        return UUID(str(lesson_id))
    except ValueError:
        raise InvalidLessonQuery("lesson_id", f"is not a UUID: {lesson_id!r}") from None
