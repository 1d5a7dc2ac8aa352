"""Request and response models. Requests accept snake_case and the calendar front end's
camelCase; responses are snake_case.

A lesson request's fields are the ledger's own (domain/commands.py,
`LessonRequestFields`), and a calendar group's (adapters/calendar.py): typed with their
limits in the OpenAPI document, checked by the ledger, which answers a request with
several bad fields with every one of them at once, in its own words.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SkipValidation, Tag

from adapters.calendar import CALENDAR_FIELDS, ApiModel, CalendarGroup
from adapters.http.problems import FieldProblem, HolderInfo
from domain.commands import LessonRequestFields, ReasonText, RequestIdText


class LessonRequestBody(LessonRequestFields):
    """A request for one lesson slot."""

    model_config = ConfigDict(frozen=False)


def _lesson_shape(value: object) -> str:
    calendar = isinstance(value, dict) and "details" not in value and CALENDAR_FIELDS & set(value)
    return "calendar-lesson" if calendar else "ledger-lesson"


SingleLessonBody = Annotated[
    Annotated[LessonRequestBody, Tag("ledger-lesson")]
    | Annotated[CalendarGroup, Tag("calendar-lesson")],  # type: ignore[valid-type]
    Discriminator(_lesson_shape),
]
"""One lesson: in the ledger's shape (`details` apart), or as the calendar front end
sends it (one group of its batch: the details' fields beside the key's)."""


class BatchBody(ApiModel):
    """A batch in the ledger's own shape."""

    lessons: list[LessonRequestBody] = Field(max_length=100_000)
    mode: Literal["partial", "atomic"] = "partial"
    batch_id: SkipValidation[RequestIdText | None] = None


class GenerationBody(ApiModel):
    """The generated lesson of one attempt."""

    attempt: int
    content: dict[str, Any]
    model: str


class FailureBody(ApiModel):
    """Why generating an attempt failed."""

    attempt: int
    reason: str


class ChangeBody(ApiModel):
    """A regeneration or cancellation request."""

    request_id: SkipValidation[RequestIdText | None] = Field(
        None, description="The idempotency key of this change: the same id again is replayed."
    )
    reason: SkipValidation[ReasonText | None] = None
    correlation_id: SkipValidation[RequestIdText | None] = None


class CommandResponse(BaseModel):
    """What a command did; `position` is its event's notification id (None if replayed)."""

    lesson_id: UUID
    outcome: Literal["accepted", "replayed"]
    attempt: int
    position: int | None


class BatchItemError(BaseModel):
    type: str
    detail: str
    errors: list[FieldProblem] | None = None
    holder: HolderInfo | None = None


class BatchItemResponse(BaseModel):
    index: int
    outcome: Literal["accepted", "replayed", "conflict", "duplicate_in_batch", "invalid", "aborted"]
    lesson_id: UUID | None
    attempt: int | None
    position: int | None
    error: BatchItemError | None


class BatchResponse(BaseModel):
    batch_id: str | None
    mode: str
    written: bool
    items: list[BatchItemResponse]
    summary: dict[str, int]


class ErasuresCoveredResponse(BaseModel):
    """The first `count` records of the erasure log, by their digest (hex)."""

    count: int
    digest: str


class CheckpointResponse(BaseModel):
    """A signed tree head: the tree of the first `size` events has this root (hex), and
    the erasure log's first `erasures.count` records this digest; the signature (base64,
    Ed25519) is over `lesson-ledger checkpoint\\n<size>\\n<root>\\n<time>\\n` then
    `erasures\\n<count>\\n<digest>\\n` (without them, a checkpoint of a release before)."""

    size: int
    root: str
    time: datetime
    key_id: str
    signature: str
    erasures: ErasuresCoveredResponse | None = None


class EventProofResponse(BaseModel):
    """That this event, as stored (`topic`, `state` as base64), is leaf `index` of the
    checkpoint's tree: the RFC 6962 audit path, hex hashes, leaf to root."""

    index: int
    lesson_id: UUID
    version: int
    topic: str
    state: str
    path: list[str]


class HistoryEntryResponse(BaseModel):
    version: int
    event: str
    recorded_at: datetime
    request_id: str
    actor: str
    correlation_id: str | None
    source: str
    changes: dict[str, Any]
    proof: EventProofResponse | None = None
    """With `proof=true`: the inclusion proof (None: not in the tree yet)."""


class LessonStateResponse(BaseModel):
    lesson_id: UUID
    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str
    kind: str
    status: str
    attempt: int
    request_id: str | None
    requested_by: str | None
    requested_at: datetime | None
    correlation_id: str | None
    content: dict[str, Any] | None
    content_erased: bool = False
    """Generated, but a student of the lesson, or its date, erased since: `content` null."""
    model: str | None
    generated_at: datetime | None
    failure_reason: str | None
    cancel_reason: str | None
    version: int
    updated_at: datetime


class HistoryResponse(BaseModel):
    lesson_id: UUID
    entries: list[HistoryEntryResponse]
    state: LessonStateResponse | None
    checkpoint: CheckpointResponse | None = None
    """With `proof=true`: the checkpoint the entries' proofs lead to."""


class ConsistencyResponse(BaseModel):
    """That the checkpoint's tree extends the tree of its first `from_size` events: the
    RFC 6962 consistency proof, hex hashes."""

    from_size: int
    checkpoint: CheckpointResponse
    proof: list[str]


class Health(BaseModel):
    status: str
    version: str = Field(description="The release that answers (as `lesson-ledger --version`)")
