"""Requests too invalid to reach a lesson slot, kept for the audit: who sent what and
why it was refused. Not events: bad input writes nothing to the ledger itself; an
adapter keeps these in a table of their own (see adapters/rejections.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.errors import FieldError

MAX_MESSAGE = 300


@dataclass(frozen=True)
class InvalidRequest:
    """One refused request: the key parts and ids as sent (shortened), and the errors."""

    recorded_at: datetime
    request_id: str | None
    actor: str | None
    correlation_id: str | None
    source: str | None
    as_sent: dict[str, str]
    errors: list[FieldError]

    @property
    def cause(self) -> str:
        """The incident report's words for why: a missing time slot, a missing school,
        or other invalid input."""
        fields = {error["field"]: error["message"] for error in self.errors}
        if "time slot missing" in fields.get("time_slot", ""):
            return "missing_time_slot"
        if fields.get("school_id", "").startswith("is missing"):
            return "missing_school"
        return "invalid_input"


class InvalidRequestLog(Protocol):
    """Where the ledger keeps refused requests."""

    def record(self, refused: InvalidRequest) -> None: ...

    def close(self) -> None: ...


def shortened(errors: list[FieldError]) -> list[FieldError]:
    return [FieldError(field=e["field"][:100], message=e["message"][:MAX_MESSAGE]) for e in errors]
