"""Verify: fold the events afresh and report every row of the table that differs.

Both sides are streamed in lesson-id order from one consistent snapshot of the
database (the table, its position, and the log up to that position), and merged:
memory stays at one lesson's events and a page of rows, whatever the size of the log.
A row can be `missing` (the events have the lesson, the table not), `extra` (the
table has a row no event explains) or `different` (the columns that differ are listed,
expected value first).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent

from projections.lessons import LessonRow, differing_columns, fold
from projections.view import LessonsView

DifferenceKind = Literal["missing", "extra", "different"]


@dataclass(frozen=True)
class RowDifference:
    """One row where the table and the events disagree."""

    lesson_id: UUID
    kind: DifferenceKind
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """For `different`: column -> (expected from the events, found in the table)."""


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a verify, at the table's position."""

    position: int
    lessons: int
    rows: int
    differences: list[RowDifference]

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        """What was found, as JSON: each difference by lesson, kind and the columns that
        differ (named, their values left out)."""
        return {
            "ok": self.ok,
            "position": self.position,
            "lessons": self.lessons,
            "rows": self.rows,
            "differences": [
                {"lesson_id": str(d.lesson_id), "kind": d.kind, "columns": sorted(d.columns)}
                for d in self.differences
            ],
        }


def verify(view: LessonsView, mapper: Mapper[Any]) -> VerifyReport:
    """Compare the live table with the fold of the events up to the table's position."""
    differences: list[RowDifference] = []
    lessons = rows = 0
    with view.verification_snapshot() as snapshot:
        expected_rows = _folded(snapshot.events, mapper)
        actual_rows = snapshot.rows
        expected = next(expected_rows, None)
        actual = next(actual_rows, None)
        while expected is not None or actual is not None:
            if actual is None or (expected is not None and expected.lesson_id < actual.lesson_id):
                assert expected is not None
                differences.append(RowDifference(expected.lesson_id, "missing"))
                lessons += 1
                expected = next(expected_rows, None)
            elif expected is None or actual.lesson_id < expected.lesson_id:
                differences.append(RowDifference(actual.lesson_id, "extra"))
                rows += 1
                actual = next(actual_rows, None)
            else:
                changed = differing_columns(expected, actual)
                if changed:
                    differences.append(RowDifference(expected.lesson_id, "different", changed))
                lessons += 1
                rows += 1
                expected = next(expected_rows, None)
                actual = next(actual_rows, None)
        return VerifyReport(snapshot.position, lessons, rows, differences)


def _folded(events: Iterator[StoredEvent], mapper: Mapper[Any]) -> Iterator[LessonRow]:
    """One row per lesson, from its events (grouped: they come ordered by lesson, version)."""
    row: LessonRow | None = None
    for stored in events:
        event = mapper.to_domain_event(stored)
        if row is not None and row.lesson_id != event.originator_id:
            yield row
            row = None
        row = fold(row, event)
    if row is not None:
        yield row
