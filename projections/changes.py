"""Each change of the lessons read model's rows, in log order, from any position: what the
live event stream (`GET /v1/lessons/events`) sends.

A change is one event and the row it made, named by the event's position (notification
id). The rows are folded here with the read model's own `fold`, from the lesson's earlier
events, so a change read back later is the change as it was: a client that resumes after
position P receives every change after P, once, however long it was away. Positions have
gaps, and the stream never runs ahead of the read model's position, so a client that
reads a lesson after a change sees at least that change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from domain.lesson import LessonSlot
from projections.lessons import LessonRow, fold
from projections.log import EventLog, Page

PAGE_SIZE = 200
KNOWN_LIMIT = 2_000
"""Lessons whose last row a stream remembers, at most: beyond it, forgotten rows are
folded again from their events."""

EventsOf = Callable[[UUID, int], Sequence[LessonSlot.Event]]
"""A lesson's events up to a version (the ledger's slot store)."""


@dataclass(frozen=True)
class RowChange:
    """A row of the lessons read model as one event left it."""

    position: int
    event: str
    row: LessonRow


@dataclass(frozen=True)
class ChangeFilter:
    """Which rows a stream follows (None: any)."""

    provider_id: str | None = None
    school_id: str | None = None
    lesson_id: UUID | None = None

    def wants(self, row: LessonRow) -> bool:
        return (
            (self.provider_id is None or row.provider_id == self.provider_id)
            and (self.school_id is None or row.school_id == self.school_id)
            and (self.lesson_id is None or row.lesson_id == self.lesson_id)
        )


class Pages(Protocol):
    """Where a stream reads the log's pages (an EventLog, or SharedPages over one)."""

    def page(self, after: int, upto: int | None = None, page_size: int = ...) -> Page | None: ...


class SharedPages:
    """The log's pages as the streams of one process read them: a page read once however
    many streams ask for it (they wake together, at the same positions, when the read
    model moves). A page up to the read model's position never changes, so it may be
    kept; the last few are."""

    KEEP = 16

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[int, int, int], Future[Page | None]] = OrderedDict()

    def page(self, after: int, upto: int | None = None, page_size: int = PAGE_SIZE) -> Page | None:
        if upto is None:  # up to the log's end, which moves: nothing to share
            return self.log.page(after, upto, page_size)
        key = (after, upto, page_size)
        with self._lock:
            found = self._pages.get(key)
            reading = found is None
            if found is None:
                found = self._pages[key] = Future()
                while len(self._pages) > self.KEEP:
                    self._pages.popitem(last=False)
        if reading:
            try:
                found.set_result(self.log.page(after, upto, page_size))
            except BaseException as error:
                found.set_exception(error)  # those waiting meet it too; the next read again
                with self._lock:
                    if self._pages.get(key) is found:
                        del self._pages[key]
        return found.result()


class LessonChanges:
    """The changes of one stream's rows; remembers the last row of each lesson it saw, so
    a lesson's next change is one fold, not a read of its events."""

    def __init__(self, log: Pages, events_of: EventsOf, wanted: ChangeFilter) -> None:
        self.log = log
        self.events_of = events_of
        self.wanted = wanted
        self._rows: dict[UUID, LessonRow] = {}

    def next_page(self, position: int, upto: int) -> tuple[list[RowChange], int] | None:
        """The wanted changes of the next page of events after `position` (up to `upto`,
        the read model's position) and the page's position; None when there is none. The
        position moves even when no row of the page was wanted."""
        page = self.log.page(after=position, upto=upto, page_size=PAGE_SIZE)
        if page is None:
            return None
        changes = []
        for notification_id, event in zip(page.ids, page.events, strict=True):
            row = self._row_after(event)
            if self.wanted.wants(row):
                name = type(event).__qualname__.rsplit(".", 1)[-1]
                changes.append(RowChange(notification_id, name, row))
        return changes, page.position

    def _row_after(self, event: LessonSlot.Event) -> LessonRow:
        lesson_id = event.originator_id
        before = self._rows.get(lesson_id)
        if before is None and not isinstance(event, LessonSlot.Opened):
            # First seen here: its row as the events before this one made it.
            for earlier in self.events_of(lesson_id, event.originator_version - 1):
                before = fold(before, earlier)
        row = fold(before, event)
        if len(self._rows) >= KNOWN_LIMIT:
            self._rows.clear()
        self._rows[lesson_id] = row
        return row
