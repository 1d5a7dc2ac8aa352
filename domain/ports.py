"""What the ledger needs from the outside, owned here and implemented in adapters/.

`SlotStore` is where lesson slots live: loaded from their events, saved as new events.
Its `save` is where races are decided: the store refuses a write when another writer
appended to one of the slots first, and the ledger then decides again on fresh state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol
from uuid import UUID

from domain.keys import LessonKey
from domain.lesson import Decided, LessonSlot

Part = dict[str, Any]
"""A student's part of a request, or a lesson's content, as the ledger holds it."""


class SlotStore(Protocol):
    """The lesson slots' events: read back, and appended in one transaction per save.

    Every method raises LedgerUnavailable when the store cannot answer; nothing else
    of the store's own failures reaches the ledger.
    """

    def load(self, lesson_id: UUID) -> LessonSlot | None:
        """The slot as its events make it now, or None when it has none."""
        ...

    def events(
        self, lesson_id: UUID, up_to_version: int | None = None
    ) -> Sequence[LessonSlot.Event]:
        """The slot's events in order (up to a version); empty for an unknown slot."""
        ...

    def save(self, *decided: Decided | None) -> dict[UUID, int] | None:
        """Save what was decided (slots' pending events, new slots' opening events) in one
        transaction; each slot's position (the notification id of its last event), or
        None when another writer appended to one of the slots first and nothing was saved."""
        ...

    def close(self) -> None:
        """Free the store's connections."""
        ...


class StudentData(Protocol):
    """Where students' details are sealed and opened (domain/sealed.py says why).

    A student's part is sealed under that student's own key, and under the lesson date's
    key; a lesson's content under a key of its own, itself sealed under every student's
    key and the date's. Destroying a student's key erases that student's parts and every
    content made for them; destroying a date's key erases that day's parts (retention).
    """

    @property
    def print_key(self) -> bytes:
        """The key fingerprints are made with (kept outside the database)."""
        ...

    def seal_students(self, requests: Sequence[tuple[LessonKey, list[Part]]]) -> list[list[Part]]:
        """Each request's students' parts sealed (a new student gets a key of their own)."""
        ...

    def open_students(self, lesson_id: UUID, sealed: Sequence[Part | None]) -> list[Part | None]:
        """Each part opened; None for a part whose keys were destroyed (erased)."""
        ...

    def seal_content(
        self, lesson_id: UUID, lesson_date: date, students: Sequence[Part], content: Part
    ) -> Part:
        """Content made for these students (their sealed parts) of this lesson, sealed."""
        ...

    def open_content(self, lesson_id: UUID, sealed: Part) -> Part | None:
        """The content opened; None when a key it was sealed under was destroyed."""
        ...

    def close(self) -> None:
        """Free the keys' connections."""
        ...
