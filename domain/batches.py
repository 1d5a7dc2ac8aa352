"""Batches: many commands decided together and written in as few transactions as races
allow, each item answered in input order.

`partial`: each item is decided on its own and the accepted ones (with the recorded
rejections) are saved in one transaction; `atomic`: all accepted in one transaction, or
nothing written; `dry-run`: decided, never written. Items for the same key are decided
together on one slot: the first claims it, the later ones are `duplicate_in_batch` (and,
when the batch writes, recorded on the slot as refusals).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from domain.commands import ImportLesson
from domain.decisions import SlotCommand, decide, metadata_of, slot_of
from domain.errors import (
    DomainRejection,
    InvalidLessonRequest,
    LedgerError,
    LedgerUnavailable,
    LessonConflict,
)
from domain.keys import LessonKey
from domain.lesson import Decided
from domain.ports import SlotStore
from domain.state import Command

MAX_BATCH_SIZE = 500
MAX_SAVE_BYTES = 1024 * 1024
BatchOutcome = Literal[
    "accepted", "replayed", "conflict", "duplicate_in_batch", "invalid", "aborted"
]


@dataclass(frozen=True)
class BatchItemResult:
    """The answer for one item of a batch, at its index in the input."""

    index: int
    outcome: BatchOutcome
    lesson_id: UUID | None
    attempt: int | None = None
    position: int | None = None
    error: LedgerError | None = None


@dataclass(frozen=True)
class BatchResult:
    """Per-item results in input order. An atomic batch that failed wrote nothing."""

    batch_id: str | None
    mode: str
    written: bool
    items: list[BatchItemResult]

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(BatchOutcome.__args__, 0)  # type: ignore[attr-defined]
        for item in self.items:
            counts[item.outcome] += 1
        return counts


@dataclass
class _KeyGroup:
    """The items of a batch that share one key, decided together on one slot."""

    key: LessonKey
    items: list[tuple[int, SlotCommand]]
    decided: list[Decided] = field(default_factory=list)
    """What to save: the first item's decision, and the slot with its duplicates' rejections."""
    results: dict[int, BatchItemResult] = field(default_factory=dict)


class BatchDecider:
    """Decides and saves batches on a slot store; `max_race_retries` bounds the retries
    of a save that keeps losing races."""

    def __init__(self, slots: SlotStore, max_race_retries: int) -> None:
        self.slots = slots
        self.max_race_retries = max_race_retries

    def run(
        self,
        commands: Sequence[SlotCommand | InvalidLessonRequest],
        *,
        mode: str,
        batch_id: str | None,
    ) -> BatchResult:
        """Decide every command (invalid ones answer `invalid`) and save as `mode` says."""
        results: dict[int, BatchItemResult] = {}
        groups: dict[UUID, _KeyGroup] = {}
        for index, command in enumerate(commands):
            if isinstance(command, InvalidLessonRequest):
                results[index] = BatchItemResult(index, "invalid", None, error=command)
                continue
            key = command.key
            groups.setdefault(key.lesson_id, _KeyGroup(key, [])).items.append((index, command))

        written = True
        if mode == "atomic":
            written = self._commit_atomic(list(groups.values()), results)
        elif mode == "dry-run":
            for group in groups.values():
                self._decide_group(group, record_rejections=False)
            written = False
        else:
            for chunk in _by_size(list(groups.values())):
                self._commit_partial(chunk)
        for group in groups.values():
            results.update(group.results)
        return BatchResult(batch_id, mode, written, [results[i] for i in range(len(commands))])

    def _commit_partial(self, groups: list[_KeyGroup], *, presume_new: bool = True) -> None:
        """Save the decided groups in one transaction, presuming first that every slot is
        new (no reads). When a slot was not new, or another writer got to one of the
        slots first, decide them all again on fresh state and retry once; if that
        loses a race too, split the batch in halves, so a busy batch still makes progress
        in O(conflicts x log n) transactions rather than one per item."""
        tries = (3 if presume_new else 2) if len(groups) > 1 else self.max_race_retries
        for attempt in range(tries):
            for group in groups:
                self._decide_group(
                    group, record_rejections=True, presume_new=presume_new and attempt == 0
                )
            positions = self.slots.save(*[d for g in groups for d in g.decided])
            if positions is not None:
                _set_positions(groups, positions)
                return
        if len(groups) == 1:
            raise LedgerUnavailable("too much contention on one slot, try again")
        middle = len(groups) // 2
        self._commit_partial(groups[:middle], presume_new=False)
        self._commit_partial(groups[middle:], presume_new=False)

    def _commit_atomic(self, groups: list[_KeyGroup], results: dict[int, BatchItemResult]) -> bool:
        """All accepted in one transaction, or nothing written and the reasons returned."""
        for attempt in range(self.max_race_retries):
            for group in groups:
                self._decide_group(group, record_rejections=False, presume_new=attempt == 0)
            outcomes = [r.outcome for r in results.values()]
            outcomes += [r.outcome for g in groups for r in g.results.values()]
            if any(outcome not in ("accepted", "replayed") for outcome in outcomes):
                for group in groups:
                    group.results = {
                        i: BatchItemResult(i, "aborted", r.lesson_id, error=None)
                        if r.outcome == "accepted"
                        else r
                        for i, r in group.results.items()
                    }
                return False
            positions = self.slots.save(*[d for g in groups for d in g.decided])
            if positions is not None:
                _set_positions(groups, positions)
                return True
        raise LedgerUnavailable("too much contention for an atomic batch, try again")

    def _decide_group(
        self, group: _KeyGroup, *, record_rejections: bool, presume_new: bool = False
    ) -> None:
        """Decide a key's items on a freshly loaded slot (or a new one, when presuming
        it is new): the first item claims it, the batch's later items for the same key
        are duplicates."""
        lesson_id = group.key.lesson_id
        (first_index, command), *duplicates = group.items
        loaded = None if presume_new else self.slots.load(lesson_id)
        group.results = {}
        try:
            decided, decision = decide(command, loaded)
        except DomainRejection as rejection:
            assert loaded is not None, "a new slot turns nothing away"
            decided = loaded
            result = BatchItemResult(first_index, "conflict", lesson_id, error=rejection)
        else:
            result = BatchItemResult(
                first_index, decision.outcome, lesson_id, attempt=decision.attempt
            )
        group.results[first_index] = result
        # A recorded rejection is only written when the batch writes at all: an atomic
        # batch with any rejection writes nothing.
        group.decided = [decided] if record_rejections or result.outcome == "accepted" else []
        if not duplicates:
            return
        slot = slot_of(decided)
        holder = slot.current_holder()
        for index, command in duplicates:
            duplicate = LessonConflict(
                f"items[{index}] asks for the same lesson as items[{first_index}] of this batch",
                holder,
            )
            group.results[index] = BatchItemResult(
                index, "duplicate_in_batch", lesson_id, error=duplicate
            )
            if record_rejections:
                # Kept as every attempt turned away is: a batch that sends one lesson twice
                # (the incident's "identical time_slot values") shows in its history.
                slot.turn_away(_command_name(command), metadata_of(command), duplicate)
        if record_rejections and slot is not decided:
            group.decided.append(slot)  # the new slot's rejections, after its opening


def _command_name(command: SlotCommand) -> Command:
    return "import" if isinstance(command, ImportLesson) else "request"


def _by_size(groups: list[_KeyGroup]) -> Iterator[list[_KeyGroup]]:
    """The groups in chunks of at most MAX_SAVE_BYTES of details each: one save of many
    megabytes stalls psycopg's pipeline on PostgreSQL, and gains nothing over a few."""
    chunk: list[_KeyGroup] = []
    size = 0
    for group in groups:
        grows = sum(command.payload_size for _, command in group.items)
        if chunk and size + grows > MAX_SAVE_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(group)
        size += grows
    if chunk:
        yield chunk


def _set_positions(groups: Iterable[_KeyGroup], positions: dict[UUID, int]) -> None:
    for group in groups:
        for index, result in list(group.results.items()):
            if result.outcome == "accepted":
                group.results[index] = BatchItemResult(
                    index,
                    "accepted",
                    result.lesson_id,
                    result.attempt,
                    positions.get(group.key.lesson_id),
                    None,
                )
