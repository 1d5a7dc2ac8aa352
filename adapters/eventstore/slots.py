"""The ledger's `SlotStore` (domain/ports.py) on the eventsourcing Application: slots
loaded by the library's repository, saved straight through the mapper and recorder.

The save bypasses `Application.save`: its bookkeeping (snapshots, runtime Protocol checks
on every event) cost more CPU than the write itself, and the event store's Recording
objects (two per event) are not needed here. It keeps what matters: one transaction per
save, the events mapped as the library maps them, and the store's unique
(originator_id, version) deciding races, reported as None so the ledger decides again.
No other database error leaves this module: they become LedgerUnavailable.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, PersistenceError

from adapters.eventstore.application import LedgerApplication
from domain.errors import LedgerUnavailable, one_line
from domain.lesson import Decided, LessonSlot

P = ParamSpec("P")
R = TypeVar("R")
LAST_VERSION = 2**63 - 1
"""The largest version the stores can hold (a 64-bit integer): a version asked for beyond
it is beyond every slot's last event."""
RACE_PAUSE_SECONDS = 0.002
"""A save that lost a race waits up to this long (at random) before the ledger decides
again: the winner finishes meanwhile, and racing losers spread out."""


def _database_errors_as_unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """What races do not explain is an outage: the ledger answers LedgerUnavailable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except PersistenceError as error:
            raise LedgerUnavailable(f"the ledger's database failed: {one_line(error)}") from error

    return wrapper


class EventSourcedSlots:
    """Lesson slots as events in the application's store."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        self.recorder = app.recorder
        self.mapper = app.mapper

    @_database_errors_as_unavailable
    def load(self, lesson_id: UUID) -> LessonSlot | None:
        try:
            slot: LessonSlot = self.app.repository.get(lesson_id)
        except AggregateNotFoundError:
            return None
        return slot

    @_database_errors_as_unavailable
    def events(
        self, lesson_id: UUID, up_to_version: int | None = None
    ) -> Sequence[LessonSlot.Event]:
        if up_to_version is not None:
            # Not passed on as it is: SQLite and PostgreSQL refuse an integer over 64 bits.
            up_to_version = min(up_to_version, LAST_VERSION)
        return [
            cast(LessonSlot.Event, e) for e in self.app.events.get(lesson_id, lte=up_to_version)
        ]

    @_database_errors_as_unavailable
    def save(self, *decided: Decided | None) -> dict[UUID, int] | None:
        events: list[LessonSlot.Event] = []
        for item in decided:
            if isinstance(item, LessonSlot):
                events += cast(list[LessonSlot.Event], item.collect_events())
            elif item is not None:
                events.append(item)
        if not events:
            return {}
        stored = [self.mapper.to_stored_event(event) for event in events]
        try:
            ids = self.recorder.insert_events(stored)
        except IntegrityError:
            time.sleep(random.uniform(0, RACE_PAUSE_SECONDS))
            return None
        assert ids is not None and len(ids) == len(events), "the recorder numbers each event"
        return {event.originator_id: id_ for event, id_ in zip(events, ids, strict=True)}

    def close(self) -> None:
        # A recorder with connections of its own (adapters/postgres/recorder.py).
        close_recorder: Callable[[], None] | None = getattr(self.recorder, "close", None)
        if close_recorder is not None:
            close_recorder()
        self.app.close()
