"""A lesson slot's history as auditors read it: each event with who, when, which request
and batch, and what it changed, and the slot's state as it was after the last one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.lesson import LessonSlot
from domain.state import LessonState, erased

# Fields every entry carries apart (or leaves out), not as a change.
_BASE_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "request_id",
    "actor",
    "correlation_id",
    "source",
    "fingerprint",
    "as_sent",
}


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a slot's history: what happened, when, who and why."""

    version: int
    event: str
    recorded_at: datetime
    request_id: str
    actor: str
    correlation_id: str | None
    source: str
    changes: dict[str, Any]
    as_sent: dict[str, str] | None = None


@dataclass(frozen=True)
class LessonHistory:
    """A slot's events and rejected attempts, in order, and its state after the last."""

    lesson_id: UUID
    entries: list[HistoryEntry]
    state: LessonState | None


Opener = Callable[[UUID, dict[str, Any] | None], dict[str, Any] | None]
PartsOpener = Callable[[UUID, Sequence[dict[str, Any] | None]], Sequence[dict[str, Any] | None]]


def history_of(
    lesson_id: UUID,
    events: Sequence[LessonSlot.Event],
    readable: Callable[[LessonState], LessonState],
    open_content: Opener,
    open_students: PartsOpener,
) -> LessonHistory:
    """The history of these events (a slot's, in order): entries, and the state they make,
    its content opened (`readable`, `open_content`, `open_students`: the ledger's sealing)."""
    slot: LessonSlot | None = None
    for event in events:
        slot = event.mutate(slot)
    state = readable(slot.state()) if slot is not None else None
    entries = [history_entry(event, open_content, open_students) for event in events]
    return LessonHistory(lesson_id, entries, state)


def history_entry(
    event: LessonSlot.Event, open_content: Opener, open_students: PartsOpener
) -> HistoryEntry:
    """The entry of one event; the students' parts show as a count (and how many of them
    are erased), content opened (once erased: None, and `content_erased`)."""
    fields = vars(event)
    changes = {k: v for k, v in fields.items() if k not in _BASE_FIELDS}
    if changes.get("students") is not None:
        # Each student's details stay sealed in the event; history shows how many.
        parts = changes["students"]
        gone = erased(open_students(event.originator_id, parts))
        changes["students"] = f"{len(parts)} student(s)" + (f", {gone} erased" if gone else "")
    if changes.get("content") is not None:
        changes["content"] = open_content(event.originator_id, changes["content"])
        if changes["content"] is None:
            changes["content_erased"] = True
    if "usage" in changes and changes["usage"] is None:
        # Unknown usage (the template, or an event from before 0.3) is left out, so an
        # old event's entry reads exactly as it did.
        del changes["usage"]
    return HistoryEntry(
        version=event.originator_version,
        event=type(event).__qualname__.rsplit(".", 1)[-1],
        recorded_at=event.timestamp,
        request_id=fields["request_id"],
        actor=fields["actor"],
        correlation_id=fields["correlation_id"],
        source=fields["source"],
        changes=changes,
        as_sent=fields.get("as_sent"),
    )
