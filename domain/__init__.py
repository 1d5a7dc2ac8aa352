"""The lesson ledger's domain: keys, the lesson slot aggregate, commands, errors, the ledger."""

from domain.batches import BatchItemResult, BatchResult
from domain.errors import (
    FieldError,
    Holder,
    IdempotencyMismatch,
    InvalidLessonRequest,
    LedgerError,
    LedgerUnavailable,
    LessonConflict,
    LessonNotFound,
    StaleGeneration,
)
from domain.history import HistoryEntry, LessonHistory
from domain.keys import LEDGER_NAMESPACE, LessonKey, lesson_id_for, parse_key
from domain.ledger import CommandResult, LessonLedger
from domain.lesson import LessonSlot
from domain.ports import SlotStore
from domain.state import LessonState, Metadata

__all__ = [
    "LEDGER_NAMESPACE",
    "BatchItemResult",
    "BatchResult",
    "CommandResult",
    "FieldError",
    "HistoryEntry",
    "Holder",
    "IdempotencyMismatch",
    "InvalidLessonRequest",
    "LedgerError",
    "LedgerUnavailable",
    "LessonConflict",
    "LessonHistory",
    "LessonKey",
    "LessonLedger",
    "LessonNotFound",
    "LessonSlot",
    "LessonState",
    "Metadata",
    "SlotStore",
    "StaleGeneration",
    "lesson_id_for",
    "parse_key",
]
