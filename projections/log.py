"""The ledger's notification log as the projections read it: a page at a time.

Notification ids have gaps (a rejected insert consumes one), so nothing here assumes
they are contiguous: a page is whatever `select_notifications` returns after a
position, and the new position is the id of the page's last notification.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Mapper

DEFAULT_PAGE_SIZE = 500
"""Events per page (and per transaction). The library's subscriptions read 500 at a time;
larger pages gain little (decoding dominates) and hold the write lock longer."""


@dataclass(frozen=True)
class Page:
    """Consecutive notifications of the log, decoded, and the position after them."""

    events: Sequence[Any]
    position: int
    ids: Sequence[int] = ()
    """Each event's notification id (its position in the log)."""


class EventLog:
    """Reads the ledger's events in pages through its application recorder and mapper.

    Reading is streaming by construction: one page of notifications is in memory at a
    time, so catch-up and rebuild cost the same memory on any length of log.
    """

    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[Any]) -> None:
        self.recorder = recorder
        self.mapper = mapper

    def head(self) -> int:
        """The id of the last recorded notification (0 for an empty log)."""
        return self.recorder.max_notification_id() or 0

    def has(self, position: int) -> bool:
        """Whether the log holds an event at this position (ids have gaps)."""
        if not 0 < position <= self.head():
            return False  # not asked of the store: SQLite refuses an integer over 64 bits
        there = self.recorder.select_notifications(start=position, limit=1)
        return bool(there) and there[0].id == position

    def pages(
        self,
        after: int,
        upto: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        topics: Sequence[str] = (),
    ) -> Iterator[Page]:
        """Pages of events with ids > `after` (and <= `upto`; of these `topics` only, when
        given), until the log (or `upto`) is reached.

        After a full page (a backlog), the next page is read and decoded in a thread of
        its own while the caller applies this one, so the read's round trip and the
        caller's commit overlap; never more than one page ahead (two pages in memory).
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        page = self._read(after, upto, page_size, topics)
        if page is None:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="event-log-read-ahead") as reader:
            while page is not None:
                ahead: Future[Page | None] | None = None
                if len(page.events) == page_size and (upto is None or page.position < upto):
                    ahead = reader.submit(self._read, page.position, upto, page_size, topics)
                try:
                    yield page
                except BaseException:  # the caller stopped (GeneratorExit) or failed
                    if ahead is not None:
                        ahead.cancel()  # a read not yet begun is dropped
                    raise
                page = ahead.result() if ahead is not None else None

    def page(
        self, after: int, upto: int | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Page | None:
        """The one page of events after `after` (up to `upto`), or None at the end."""
        return self._read(after, upto, page_size, ())

    def _read(
        self, after: int, upto: int | None, page_size: int, topics: Sequence[str]
    ) -> Page | None:
        """The page after `after`, decoded, or None at the end of the log (or `upto`)."""
        if upto is not None and after >= upto:
            return None
        notifications = self.recorder.select_notifications(
            start=after, limit=page_size, stop=upto, topics=topics, inclusive_of_start=False
        )
        if not notifications:
            return None
        to_event = self.mapper.to_domain_event
        return Page(
            [to_event(n) for n in notifications],
            notifications[-1].id,
            [n.id for n in notifications],
        )
