"""What the ledger needs from the outside, owned here and implemented in adapters/.

`SlotStore` is where lesson slots live: loaded from their events, saved as new events.
Its `save` is where races are decided: the store refuses a write when another writer
appended to one of the slots first, and the ledger then decides again on fresh state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from domain.lesson import Decided, LessonSlot


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
