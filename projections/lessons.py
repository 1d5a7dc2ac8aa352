"""The lessons read model's rows, and the pure fold from lesson slot events to rows.

One row per lesson slot, with the columns of the old `ai_generated_lessons` table.
`fold(row, event)` is the only place that knows how an event changes a row: catch-up,
live follow, rebuild and verify all use it, so they cannot disagree. It reproduces
`LessonSlot.state()` for the columns the table holds (verify and the tests compare
the two), and it does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID

from domain.lesson import LessonSlot
from domain.state import LessonState

SHAPE = 1
"""The shape of the rows this release writes: bump it when `fold` or the table's columns
change. A table of another shape is rebuilt (into a shadow table, then swapped) on the
first start of this release, and never read or written meanwhile."""

STATUSES: tuple[str, ...] = ("new", "requested", "generated", "failed", "cancelled")
"""Every status a row can hold ("new": opened, not yet requested; never seen in practice
because a slot is opened and requested in one transaction)."""


class ProjectionError(Exception):
    """The events cannot be folded into rows: a bug or an unknown event, never bad input."""


class UnknownLessonEvent(ProjectionError):
    """An event type the fold does not know. Raised, not skipped: skipping would leave the
    table silently wrong; a new event type needs a new branch in `fold` (and a rebuild)."""


@dataclass(frozen=True)
class LessonRow:
    """One row of the `lessons` table, as the query API returns it."""

    lesson_id: UUID
    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str
    status: str
    attempt: int
    request_id: str | None
    requested_by: str | None
    requested_at: datetime | None
    content: dict[str, Any] | None
    model: str | None
    generated_at: datetime | None
    failure_reason: str | None
    version: int
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The row with plain Python values (UUID, date and datetime kept as objects)."""
        return asdict(self)

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-ready values: ids, dates and times as ISO text."""
        return {name: _json_value(value) for name, value in self.as_dict().items()}


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LessonRow))
"""The table's columns, in the order the stores create and select them."""


def fold(row: LessonRow | None, event: object) -> LessonRow:
    """The row after `event`, given the row before it (None before the slot's first event).

    Every event sets `version` and `updated_at`, as the aggregate's version and
    `modified_on` move with every event, a recorded rejection included.
    """
    version: int = getattr(event, "originator_version", 0)
    timestamp: datetime = getattr(event, "timestamp", None)  # type: ignore[assignment]
    if isinstance(event, LessonSlot.Opened):
        if row is not None:
            raise ProjectionError(f"lesson {event.originator_id} was opened twice")
        # OpenedByRequest is both the opening and the first request (one row, built once).
        first = event if isinstance(event, LessonSlot.LessonRequested) else None
        return LessonRow(
            lesson_id=event.originator_id,
            provider_id=event.provider_id,
            school_id=event.school_id,
            lesson_date=event.lesson_date,
            time_slot=event.time_slot,
            status="requested" if first else "new",
            attempt=first.attempt if first else 0,
            request_id=first.request_id if first else None,
            requested_by=first.actor if first else None,
            requested_at=timestamp if first else None,
            content=None,
            model=None,
            generated_at=None,
            failure_reason=None,
            version=version,
            updated_at=timestamp,
        )
    if row is None:
        raise ProjectionError(
            f"{type(event).__qualname__} for lesson {getattr(event, 'originator_id', '?')} "
            "before the lesson was opened"
        )
    if isinstance(event, LessonSlot.LessonRequested):
        return replace(
            row,
            status="requested",
            attempt=event.attempt,
            request_id=event.request_id,
            requested_by=event.actor,
            requested_at=event.timestamp,
            content=None,
            model=None,
            generated_at=None,
            failure_reason=None,
            version=version,
            updated_at=timestamp,
        )
    if isinstance(event, LessonSlot.LessonGenerated):
        return replace(
            row,
            status="generated",
            content=event.content,
            model=event.model,
            generated_at=event.timestamp,
            version=version,
            updated_at=timestamp,
        )
    if isinstance(event, LessonSlot.GenerationFailed):
        return replace(
            row,
            status="failed",
            failure_reason=event.reason,
            version=version,
            updated_at=timestamp,
        )
    if isinstance(event, LessonSlot.LessonCancelled):
        # The slot is free again; the cancelled attempt's holder and result stay visible.
        return replace(row, status="cancelled", version=version, updated_at=timestamp)
    if isinstance(event, LessonSlot.RequestRejected):
        return replace(row, version=version, updated_at=timestamp)
    if isinstance(event, LessonSlot.LessonImported):
        # A legacy row: generated when it had content, else requested, as attempt 1,
        # with the legacy row's own times where it had them.
        requested_at = event.legacy_created_at or event.timestamp
        generated = bool(event.content)
        return replace(
            row,
            status="generated" if generated else "requested",
            attempt=1,
            request_id=event.request_id,
            requested_by=event.actor,
            requested_at=requested_at,
            content=event.content,
            model="legacy" if generated else None,
            generated_at=(event.legacy_updated_at or requested_at) if generated else None,
            version=version,
            updated_at=timestamp,
        )
    raise UnknownLessonEvent(
        f"the lessons projection does not know {type(event).__module__}."
        f"{type(event).__qualname__}; teach projections.lessons.fold about it, then rebuild"
    )


def fold_page(rows: Mapping[UUID, LessonRow], events: Iterable[object]) -> dict[UUID, LessonRow]:
    """Fold a page of events (in log order) over the rows they touch; returns the changed rows."""
    changed: dict[UUID, LessonRow] = {}
    for event in events:
        lesson_id: UUID = event.originator_id  # type: ignore[attr-defined]
        before = changed.get(lesson_id) or rows.get(lesson_id)
        changed[lesson_id] = fold(before, event)
    return changed


def row_from_state(state: LessonState) -> LessonRow:
    """The row the table should hold for a slot's state (what verify and tests compare)."""
    return LessonRow(**{name: getattr(state, name) for name in COLUMNS})


def differing_columns(expected: LessonRow, actual: LessonRow) -> dict[str, tuple[Any, Any]]:
    """Columns whose values differ, as {column: (expected, actual)}."""
    return {
        name: (getattr(expected, name), getattr(actual, name))
        for name in COLUMNS
        if getattr(expected, name) != getattr(actual, name)
    }


def _json_value(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
