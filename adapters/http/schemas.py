"""Request and response models. Requests accept snake_case and the calendar front end's
camelCase; responses are snake_case.

Request fields are typed loosely where the ledger validates them itself, so a request
with several bad fields is answered with every one of them at once, in the ledger's
words; the documented JSON schema still says what each field should be.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from adapters.http.problems import FieldProblem, HolderInfo

Text = Annotated[Any, WithJsonSchema({"type": "string"})]
OptionalText = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]})]
Details = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "object"}, {"type": "null"}],
            "description": "students (1-30 of {id, grade, readingLevel?, iepGoals?, "
            "accommodations?}), subject, subjectType (ela|math), teacherRole "
            "(resource|ot|speech|counseling), topic, duration (5-120), focusSkills",
        }
    ),
]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class LessonRequestBody(ApiModel):
    """A request for one lesson slot."""

    provider_id: OptionalText = Field(None, description="defaults to a provider token's own")
    school_id: Text = None
    lesson_date: Text = Field(None, description="YYYY-MM-DD")
    time_slot: OptionalText = Field(None, description="HH:MM-HH:MM; none for on_demand")
    kind: Literal["scheduled", "on_demand"] = "scheduled"
    request_id: Text = Field(None, description="the idempotency key of this request")
    details: Details = None
    correlation_id: OptionalText = None


class BatchBody(ApiModel):
    """A batch in the ledger's own shape."""

    lessons: list[LessonRequestBody] = Field(max_length=100_000)
    mode: Literal["partial", "atomic"] = "partial"
    batch_id: OptionalText = None


class CalendarGroup(ApiModel):
    """One group of the calendar front end's batch: a slot and what to generate."""

    students: Any = None
    subject: Any = None
    subject_type: Any = None
    duration: Any = None
    topic: Any = None
    teacher_role: Any = None
    focus_skills: Any = None
    lesson_date: Text = None
    time_slot: OptionalText = None
    school_id: Text = None
    provider_id: OptionalText = None
    kind: Literal["scheduled", "on_demand"] = "scheduled"
    request_id: OptionalText = None


class CalendarBatchBody(ApiModel):
    """The calendar front end's batch, taken as it is sent."""

    batch: list[CalendarGroup] = Field(max_length=100_000)


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

    request_id: Text = None
    reason: OptionalText = None
    correlation_id: OptionalText = None


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


class HistoryEntryResponse(BaseModel):
    version: int
    event: str
    recorded_at: datetime
    request_id: str
    actor: str
    correlation_id: str | None
    source: str
    changes: dict[str, Any]


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


class Health(BaseModel):
    status: str
