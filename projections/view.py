"""The contract between the lessons projection and a store, and the store-independent
algorithms that rest on it: applying a page exactly once, and swapping in a rebuilt table.

A store (adapters/lessons_view_sqlite.py, adapters/lessons_view_postgres.py) is a
subclass of the eventsourcing library's tracking recorder for that store, mixed with
`LessonsView`: the library's tracking table holds the positions ("tracking name" ->
notification id), the store adds the `lessons` table beside it, and each page's row
changes and its new position are written in one transaction of that recorder.

Exactly once rests on the position, not on the runner lock: a page's transaction first
locks the tracking row and checks that it still holds the position the page was read
after. If another writer moved it (a swap, or a second runner that lost its lock
without noticing), the transaction writes nothing and the runner starts again from the
stored position. The library's tracking insert adds its own guard: it refuses a
position that does not move forward.

Tracking names are "lessons" and "lessons_shadow", not the upstream application's name
as the library's runner would use: on SQLite every follower shares one `tracking`
table, and the generation worker will follow the same application.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.lesson import LessonSlot
from projections import lessons
from projections.lessons import LessonRow, ProjectionError, fold_page
from projections.log import EventLog, Page

PAGE_PAUSE_SETTING = "LESSON_LEDGER_TEST_PAGE_PAUSE"
"""Test-only: seconds to wait inside each page's transaction, before it commits, so that a
test can kill a runner in the middle of its work (and most likely mid-transaction)."""


@dataclass(frozen=True)
class Target:
    """A table the projection writes, and the tracking name of its position."""

    table: str
    tracking_name: str


LIVE = Target("lessons", "lessons")
SHADOW = Target("lessons_shadow", "lessons_shadow")
PROJECTION_NAME = "lessons"
SHAPES = {LIVE: "lessons.shape", SHADOW: "lessons_shadow.shape"}
"""Tracking names under which each table's shape (projections.lessons.SHAPE) is kept: a
shape only grows, as a position does. No shape kept: a table made before shapes were
kept, which is shape 1."""


@dataclass(frozen=True)
class LessonQuery:
    """Filters, order and page of a lesson listing (the read model validates them).

    Order: lesson_date, time_slot, lesson_id, all ascending: unique, so pages are stable.
    `after` is the sort key of the last row of the previous page (keyset pagination).
    `date_from` and `date_to` are inclusive.
    """

    provider_id: str | None = None
    school_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    status: str | None = None
    after: tuple[date, str, UUID] | None = None
    limit: int = 50


@dataclass(frozen=True)
class VerificationSnapshot:
    """The table and the log as one consistent snapshot, both ordered by lesson id.

    `events` are the stored events with notification ids <= `position`, ordered by
    (originator_id, originator_version); `rows` are the table's rows ordered by lesson_id.
    Both are streamed from the database.
    """

    position: int
    events: Iterator[StoredEvent]
    rows: Iterator[LessonRow]


def not_forward(table: str, count: int) -> str:
    """SafetyNetFired's message when rows would not move forward in their history."""
    return (
        f"the {table} table refused {count} row(s) that would not move forward in their "
        "lesson's history (opened twice, or a page applied twice)"
    )


class SafetyNetFired(ProjectionError):
    """The table refused a row: the UNIQUE (provider_id, school_id, lesson_date,
    time_slot) constraint, or a row that would go back to an earlier (or the same)
    version of its lesson.

    It must never fire: the lesson id is derived from that tuple, and each page is
    applied once. If it does, the projection has a bug; the page is rolled back and the
    runner stops on it.
    """


class ShapeOutdated(ProjectionError):
    """The table holds rows of another shape than this release writes: it is rebuilt
    (`rebuild`, which the follower starts by itself) before it is read or written."""

    def __init__(self, table: str, found: int) -> None:
        super().__init__(
            f"the {table} table holds rows of shape {found}; this release writes shape "
            f"{lessons.SHAPE}: it is rebuilt before it is used (lesson-ledger projections "
            "rebuild, or the first follower to start)"
        )
        self.found = found


class PositionMoved(Exception):
    """Raised inside a page transaction to roll it back: the stored position is not the
    one the page was read after."""


class RunnerLock(ABC):
    """At most one runner per tracking name, across processes. Released when its holder
    dies (PostgreSQL: the session ends; SQLite: the kernel drops the file lock)."""

    @abstractmethod
    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        """Take the lock; with `wait`, block until it is free or `stop` is set."""

    @abstractmethod
    def release(self) -> None:
        """Let another runner take over (idempotent)."""

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this object holds the lock."""

    @abstractmethod
    def is_taken(self) -> bool:
        """Whether any runner (this one included) holds the lock now."""

    def check(self) -> None:  # noqa: B027 - optional: stores whose lock can be lost override it
        """Raise if a held lock was lost (e.g. its database session died)."""


class Wakeup(ABC):
    """How an idle follower learns that new events were recorded."""

    def open(self) -> None:  # noqa: B027 - optional: only listening stores need it
        """Start noticing events; called before the follower's first catch-up, so that
        nothing recorded meanwhile goes unnoticed."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return when new events may have been recorded, `wake()` was called, or after
        `timeout` seconds."""

    @abstractmethod
    def wake(self) -> None:
        """Make a waiting (or the next) `wait` return at once (thread-safe)."""

    @abstractmethod
    def close(self) -> None:
        """Free the resources (idempotent)."""


class LessonsView(ABC):
    """A store's lessons table(s) and positions: the algorithms here, the SQL in stores."""

    events_table: str = ""
    """The ledger's events table (set by the store's opener), for lag and verify."""

    # Positions.

    def position(self, target: Target = LIVE) -> int | None:
        """The target's stored position: None when it has none (a shadow not started)."""
        return self._read_position(target.tracking_name)

    def shape(self, target: Target = LIVE) -> int:
        """The shape of the target's rows (see `SHAPES`)."""
        return self._read_position(SHAPES[target]) or 1

    def _start_live(self) -> None:
        """A new live table starts at position 0, in this release's shape (the stores
        call it once their tables exist)."""
        with self._write_transaction() as cursor:
            if self._locked_position(cursor, LIVE.tracking_name) is None:
                self._store_position(cursor, LIVE.tracking_name, 0)
                self._store_position(cursor, SHAPES[LIVE], lessons.SHAPE)

    @abstractmethod
    def _read_position(self, tracking_name: str) -> int | None:
        """The stored position of a tracking name, outside any transaction."""

    # Applying pages.

    def apply_page(self, target: Target, expected: int, page: Page) -> bool:
        """Apply a page's events to the target's rows and store `page.position`, in one
        transaction, if the stored position is still `expected`; else write nothing and
        return False (the caller reads the stored position and goes on from there)."""
        try:
            # A shadow page may be lost in a crash (rows and position together, so the
            # rebuild resumes from before it): it need not wait for its WAL flush.
            with self._write_transaction(flush=target != SHADOW) as cursor:
                current = self._locked_position(cursor, target.tracking_name)
                if current != expected:
                    raise PositionMoved
                found = self._locked_position(cursor, SHAPES[target]) or 1
                if found != lessons.SHAPE:  # never mix rows of two shapes in one table
                    raise ShapeOutdated(target.table, found)
                self._apply(cursor, target, page)
                _pause_for_tests()
        except PositionMoved:
            return False
        return True

    def _apply(self, cursor: Any, target: Target, page: Page) -> None:
        # A slot opened in this page has no row yet: only the others' rows are read (for
        # a backlog of new lessons, none). Were one there all the same, the upsert would
        # refuse it (a row never goes back to an earlier version).
        opened = {e.originator_id for e in page.events if isinstance(e, LessonSlot.Opened)}
        ids = {e.originator_id for e in page.events} - opened
        rows = self._select_rows(cursor, target.table, ids) if ids else {}
        changed = fold_page(rows, page.events)
        # New rows go in as new (on PostgreSQL by COPY, about twice as fast as the upsert).
        self._insert_rows(cursor, target.table, [changed[i] for i in opened])
        self._upsert_rows(cursor, target.table, [changed[i] for i in ids])
        self._store_position(cursor, target.tracking_name, page.position)

    # Rebuilding.

    def prepare_shadow(self, *, restart: bool) -> tuple[int, bool]:
        """Make sure a shadow table and its position exist: (position, resumed).

        An interrupted rebuild left both, consistent (each page committed its rows with
        its position): it is resumed, unless `restart` asks for a fresh one.
        """
        with self._write_transaction() as cursor:
            position = self._locked_position(cursor, SHADOW.tracking_name)
            exists = self._table_exists(cursor, SHADOW.table)
            shape = self._locked_position(cursor, SHAPES[SHADOW]) or 1
            if position is not None and exists and shape == lessons.SHAPE and not restart:
                return position, True
            if exists:
                self._drop_table(cursor, SHADOW.table)
            self._forget_position(cursor, SHADOW.tracking_name)
            self._forget_position(cursor, SHAPES[SHADOW])
            self._create_lessons_table(cursor, SHADOW.table)
            self._store_position(cursor, SHADOW.tracking_name, 0)
            self._store_position(cursor, SHAPES[SHADOW], lessons.SHAPE)
            self._record_rebuild(cursor, datetime.now().astimezone())
            return 0, False

    def swap_in_shadow(
        self,
        log: EventLog,
        page_size: int,
        before_commit: Callable[[], None] | None = None,
    ) -> int:
        """Replace the live table by the shadow in one transaction; return the new live
        position.

        The live table never moves back, so a reader who waited for a position keeps
        seeing it: while holding the live position's lock (the live runner waits), the
        shadow is brought up to the live position first. On PostgreSQL readers wait for
        the renames (milliseconds) and then read the new table; on SQLite they keep
        reading their snapshot. `before_commit` is a test hook.
        """
        with self._write_transaction(swap=True) as cursor:
            live = self._locked_position(cursor, LIVE.tracking_name) or 0
            shadow = self._locked_position(cursor, SHADOW.tracking_name)
            if shadow is None or not self._table_exists(cursor, SHADOW.table):
                raise ProjectionError("there is no rebuilt table to swap in")
            for page in log.pages(after=shadow, upto=live, page_size=page_size):
                self._apply(cursor, SHADOW, page)
            # Between the shadow's position and the live one there may be only gaps:
            # then the shadow already is what the live table is at its position.
            new_position = max(live, self._locked_position(cursor, SHADOW.tracking_name) or 0)
            self._replace_live_with_shadow(cursor)
            if new_position > live:
                self._store_position(cursor, LIVE.tracking_name, new_position)
            self._forget_position(cursor, SHAPES[LIVE])
            self._store_position(cursor, SHAPES[LIVE], lessons.SHAPE)
            self._forget_position(cursor, SHADOW.tracking_name)
            self._forget_position(cursor, SHAPES[SHADOW])
            self._forget_rebuild(cursor)
            if before_commit is not None:
                before_commit()
        return new_position

    def abandon_shadow(self) -> None:
        """Drop an interrupted rebuild's table and position (the live table is untouched)."""
        with self._write_transaction() as cursor:
            if self._table_exists(cursor, SHADOW.table):
                self._drop_table(cursor, SHADOW.table)
            self._forget_position(cursor, SHADOW.tracking_name)
            self._forget_position(cursor, SHAPES[SHADOW])
            self._forget_rebuild(cursor)

    @abstractmethod
    def rebuild_started_at(self) -> datetime | None:
        """When the current (or interrupted) rebuild started, None without one."""

    # Queries.

    @abstractmethod
    def get_row(self, lesson_id: UUID) -> LessonRow | None:
        """One live row by id."""

    @abstractmethod
    def list_rows(self, query: LessonQuery) -> list[LessonRow]:
        """Live rows matching the query, in its order, at most `query.limit`."""

    @abstractmethod
    def count_events_after(self, position: int) -> int:
        """How many events the log holds after `position` (the exact lag)."""

    @abstractmethod
    def verification_snapshot(self) -> AbstractContextManager[VerificationSnapshot]:
        """The live table and the log as of one consistent snapshot (see verify)."""

    # Runners.

    @abstractmethod
    def runner_lock(self, target: Target) -> RunnerLock:
        """The lock that makes one runner per target active at a time."""

    @abstractmethod
    def wakeup(self) -> Wakeup:
        """A new way for a follower to wait for events (each follower gets its own)."""

    @abstractmethod
    def close(self) -> None:
        """Close the store's connections."""

    # Store primitives, inside a write transaction (the cursor is the store's).

    @abstractmethod
    def _write_transaction(
        self, *, swap: bool = False, flush: bool = True
    ) -> AbstractContextManager[Any]:
        """One write transaction; committed when the block ends, rolled back on error.
        `swap`: the transaction will replace tables (PostgreSQL bounds its lock waits).
        `flush=False`: the commit need not wait until it is on disk (PostgreSQL)."""

    @abstractmethod
    def _locked_position(self, cursor: Any, tracking_name: str) -> int | None:
        """The stored position, locked until the transaction ends (None: no row)."""

    @abstractmethod
    def _store_position(self, cursor: Any, tracking_name: str, position: int) -> None:
        """Store a position that moves forward (the library's tracking insert)."""

    @abstractmethod
    def _forget_position(self, cursor: Any, tracking_name: str) -> None:
        """Delete a tracking name's row."""

    @abstractmethod
    def _select_rows(self, cursor: Any, table: str, ids: Iterable[UUID]) -> dict[UUID, LessonRow]:
        """The rows with these ids."""

    @abstractmethod
    def _insert_rows(self, cursor: Any, table: str, rows: Sequence[LessonRow]) -> None:
        """Insert rows of lessons that have none yet (raise SafetyNetFired if one has, or
        if the unique tuple refuses one)."""

    @abstractmethod
    def _upsert_rows(self, cursor: Any, table: str, rows: Sequence[LessonRow]) -> None:
        """Insert or replace whole rows, each only by a later version of its lesson (raise
        SafetyNetFired if the unique tuple refuses one, or a row would not move forward)."""

    @abstractmethod
    def _table_exists(self, cursor: Any, table: str) -> bool: ...

    @abstractmethod
    def _create_lessons_table(self, cursor: Any, table: str) -> None:
        """Create a lessons table with its constraints and indexes, named for `table`."""

    @abstractmethod
    def _drop_table(self, cursor: Any, table: str) -> None: ...

    @abstractmethod
    def _replace_live_with_shadow(self, cursor: Any) -> None:
        """Drop the live table and give the shadow its name, constraints and indexes."""

    @abstractmethod
    def _record_rebuild(self, cursor: Any, started_at: datetime) -> None:
        """Remember that a rebuild started (status shows it to other processes)."""

    @abstractmethod
    def _forget_rebuild(self, cursor: Any) -> None: ...


def _pause_for_tests() -> None:
    pause = os.environ.get(PAGE_PAUSE_SETTING)
    if pause:
        time.sleep(float(pause))
