"""The lesson slot's values: what a command decided, who sent it, and the slot's state as
queries return it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

Status = Literal["new", "requested", "generated", "failed", "cancelled"]
Outcome = Literal["accepted", "replayed"]


@dataclass(frozen=True)
class Decision:
    """What a command decided: a new event pending ("accepted") or nothing to write
    ("replayed"), and the attempt it concerns."""

    outcome: Outcome
    attempt: int


Command = Literal[
    "request", "regenerate", "cancel", "record_generation", "record_failure", "import"
]


@dataclass(frozen=True)
class Metadata:
    """Who did it, as every event records it."""

    request_id: str
    actor: str
    correlation_id: str | None = None
    source: str = "api"
    as_sent: dict[str, str] | None = None
    """The key's parts as the caller spelled them, for the conflict report."""

    def fields(self) -> dict[str, Any]:
        """The metadata as event fields (`dataclasses.asdict` deep-copies: slower by far)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LessonState:
    """A lesson slot's state at one version, as queries return it."""

    lesson_id: UUID
    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str
    kind: str
    status: Status
    attempt: int
    request_id: str | None
    requested_by: str | None
    requested_at: datetime | None
    correlation_id: str | None
    details: dict[str, Any] | None
    students: Sequence[dict[str, Any] | None] | None
    """Each student's part: sealed as the slot holds it, or opened (`LessonLedger.readable`),
    an erased one then None."""
    content: dict[str, Any] | None
    model: str | None
    generated_at: datetime | None
    failure_reason: str | None
    cancel_reason: str | None
    version: int
    updated_at: datetime
    legacy_id: str | None = None
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def students_erased(self) -> int:
        """How many of its students were erased (of a state opened by the ledger)."""
        return erased(self.students)

    @property
    def content_erased(self) -> bool:
        """Whether its content was erased (of a state opened by the ledger): a generated
        lesson always had content, so none to show means it no longer opens."""
        return self.status == "generated" and self.content is None


def erased(parts: Sequence[dict[str, Any] | None] | None) -> int:
    """How many of these opened students' parts are erased (opened as None)."""
    return sum(part is None for part in parts or ())
