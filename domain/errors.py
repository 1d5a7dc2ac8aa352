"""The ledger's answers when it turns a command away. Each names what was wrong."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypedDict, TypeVar

T = TypeVar("T")


class FieldError(TypedDict):
    """One bad field of a command and what was wrong with it."""

    field: str
    message: str


@dataclass(frozen=True)
class Holder:
    """Who holds a lesson slot: the request that claimed its current attempt."""

    request_id: str
    actor: str
    requested_at: datetime
    status: str
    attempt: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requested_at": self.requested_at.isoformat()}


def parse_field(
    errors: list[FieldError], field: str, parse: Callable[[Any], T], value: object
) -> T | None:
    """Parse one field, adding its error to `errors` instead of stopping at the first."""
    try:
        return parse(value)
    except ValueError as invalid:
        errors.append(FieldError(field=field, message=str(invalid)))
        return None


def one_line(error: BaseException) -> str:
    """The first non-blank line of an error's message (its type's name when it has none):
    what a log line, a problem detail or the command line shows of it."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class DomainRejection(LedgerError):
    """The command was understood and turned away by the rules of the lesson slot."""

    reason = "rejected"


class LessonConflict(DomainRejection):
    """The slot is held by another request, or the command does not fit its state."""

    reason = "conflict"

    def __init__(self, message: str, holder: Holder | None) -> None:
        super().__init__(message)
        self.holder = holder


class StaleGeneration(DomainRejection):
    """A generation result or failure for an attempt that is no longer the current one."""

    reason = "stale"

    def __init__(self, message: str, attempt: int, current_attempt: int) -> None:
        super().__init__(message)
        self.attempt = attempt
        self.current_attempt = current_attempt


class IdempotencyMismatch(DomainRejection):
    """A request id used again with a different command or different details."""

    reason = "idempotency_mismatch"

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class InvalidLessonRequest(LedgerError):
    """The command's input is invalid; `errors` names every bad field at once."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class LessonNotFound(LedgerError):
    """No lesson has this id."""


class LedgerUnavailable(LedgerError):
    """The ledger's database could not be reached or configured."""
