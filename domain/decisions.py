"""How a validated command is decided on its slot: the rule every path shares (a single
request, a batch item, an imported row), whether or not the slot exists yet."""

from __future__ import annotations

from domain.commands import ImportLesson, RequestLesson
from domain.lesson import Decided, LessonSlot
from domain.state import Decision, Metadata

SlotCommand = RequestLesson | ImportLesson


def decide(command: SlotCommand, slot: LessonSlot | None) -> tuple[Decided, Decision]:
    """The command decided on the slot, or on a new slot for its key when there is none.

    A request for a new slot decides one event, the slot's opening (attempt 1), without
    building the slot: most requests are for new slots. A rule that turns the command
    away records a RequestRejected event on the slot and raises a DomainRejection.
    """
    by = metadata_of(command)
    fingerprint = command.fingerprint
    assert fingerprint is not None, "the ledger prints every command before deciding it"
    if isinstance(command, ImportLesson):
        slot = slot or LessonSlot.open(command.key, by)
        decision = slot.import_legacy(
            by,
            command.legacy_id,
            command.content,
            command.created_at,
            command.updated_at,
            command.flags,
            fingerprint,
        )
        return slot, decision
    if slot is None:
        opened = LessonSlot.first_request(
            command.key, by, command.details, command.students, fingerprint
        )
        return opened, Decision("accepted", 1)
    return slot, slot.request(by, command.details, command.students, fingerprint)


def metadata_of(command: SlotCommand) -> Metadata:
    """Who sent the command, as its events record it."""
    return Metadata(
        command.request_id, command.actor, command.correlation_id, command.source, command.as_sent
    )


def slot_of(decided: Decided) -> LessonSlot:
    """The slot a decision leaves (built from a new slot's opening event if need be)."""
    if isinstance(decided, LessonSlot):
        return decided
    slot = decided.mutate(None)
    assert isinstance(slot, LessonSlot)
    return slot
