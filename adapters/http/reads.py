"""Reads from the `lessons` read model, and the projections' status and rebuild.

`min_position` (a command's `position`) waits, up to 5 s, until the read model has
caught up to that command: read-your-writes across processes. Queries go to the read
replica while it is within its allowed lag, else to the primary (adapters/read_routing.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from adapters.http.auth import not_yours
from adapters.http.dependencies import (
    PROBLEMS,
    Admin,
    Ledger,
    Reader,
    ReadModel,
    Reads,
    WholeNumber,
)
from adapters.http.problems import ApiProblem
from adapters.http.rebuilding import RebuildRefused, start_rebuild
from adapters.read_routing import NotCaughtUp, ReadRouting
from domain import FieldError, InvalidLessonRequest, LessonLedger, LessonNotFound
from projections.lessons import COLUMNS, LessonRow
from projections.read_model import InvalidLessonQuery, LessonsReadModel

router = APIRouter(tags=["read model"])
T = TypeVar("T")


@dataclass(frozen=True)
class LessonRead(LessonRow):
    """A lesson as the API shows it: its content opened (the read model keeps it sealed).
    `content_erased`: it was generated, but a student of the lesson, or its date, has
    been erased since, so `content` is null."""

    content_erased: bool = False


class LessonListResponse(BaseModel):
    """One page of lessons; pass `next_cursor` as `cursor` for the next (None: last)."""

    items: list[LessonRead]
    next_cursor: str | None
    position: int


class RebuildProgressResponse(BaseModel):
    """A rebuild under way (`running`) or interrupted (resumable)."""

    position: int
    head: int
    started_at: datetime | None
    running: bool
    fraction: float


class ProjectionResponse(BaseModel):
    """Where a projection stands; `lag` counts the events after its position."""

    name: str
    position: int
    head: int
    lag: int
    runner_active: bool
    rebuild: RebuildProgressResponse | None


class RebuildStarted(BaseModel):
    name: str
    status: Literal["started", "running"]


MinPosition = Annotated[
    WholeNumber | None,
    Query(ge=0, description="wait (up to 5 s) until the read model has this command's position"),
]


def check_min_position(read_model: LessonsReadModel, min_position: int | None) -> None:
    """422 for a position beyond the last recorded event (one no command answered)."""
    if min_position is not None and min_position > (head := read_model.head()):
        raise InvalidLessonRequest(
            [
                FieldError(
                    field="min_position",
                    message=f"is beyond the last recorded event ({head}): "
                    "pass the position a command answered",
                )
            ]
        )


def caught_up(
    request: Request,
    reads: ReadRouting,
    min_position: int | None,
    query: Callable[[LessonsReadModel], T],
) -> tuple[int, T]:
    """The answering read model's position and `query`'s answer, from the replica or the
    primary, once the read model has `min_position` (503 when it has not in time)."""
    check_min_position(reads.primary, min_position)
    wait = request.app.state.settings.min_position_wait_seconds
    try:
        return reads.read(min_position, wait, lambda model: (model.position(), query(model)))
    except NotCaughtUp as behind:
        raise ApiProblem(503, "not-caught-up", "Read model behind", str(behind)) from None


@router.get("/v1/lessons", responses=PROBLEMS)
def list_lessons(
    request: Request,
    token: Reader,
    reads: Reads,
    ledger: Ledger,
    provider_id: str | None = None,
    school_id: str | None = None,
    date_from: Annotated[str | None, Query(alias="from", description="YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, Query(alias="to", description="YYYY-MM-DD")] = None,
    status: Literal["requested", "generated", "failed", "cancelled"] | None = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    min_position: MinPosition = None,
) -> LessonListResponse:
    """Lessons from the read model, filtered and a page at a time. A provider token sees
    its own provider's lessons only."""
    if token.role == "provider":
        if provider_id is not None and provider_id.strip().lower() != token.provider_id:
            raise ApiProblem(
                403,
                "forbidden",
                "Forbidden",
                "a provider token reads its own provider's lessons only",
            )
        provider_id = token.provider_id
    try:
        position, page = caught_up(
            request,
            reads,
            min_position,
            lambda model: model.list_lessons(
                provider_id=provider_id,
                school_id=school_id,
                date_from=date_from,
                date_to=date_to,
                status=status,
                limit=limit,
                cursor=cursor,
            ),
        )
    except InvalidLessonQuery as invalid:
        name = {"date_from": "from", "date_to": "to"}.get(invalid.field, invalid.field)
        raise InvalidLessonRequest([FieldError(field=name, message=invalid.message)]) from None
    return LessonListResponse(
        items=[readable(ledger, row) for row in page.items],
        next_cursor=page.next_cursor,
        position=position,
    )


@router.get("/v1/lessons/{lesson_id}", responses=PROBLEMS)
def get_lesson(
    lesson_id: UUID,
    request: Request,
    token: Reader,
    reads: Reads,
    ledger: Ledger,
    min_position: MinPosition = None,
) -> LessonRead:
    """One lesson from the read model (404 when it has none, yet: see `min_position`)."""
    _, found = caught_up(request, reads, min_position, lambda model: model.get_lesson(lesson_id))
    if token.role == "provider" and (found is None or found.provider_id != token.provider_id):
        raise not_yours(lesson_id)
    if found is None:
        raise LessonNotFound(f"no lesson has the id {lesson_id} in the read model")
    return readable(ledger, found)


def readable(ledger: LessonLedger, row: LessonRow) -> LessonRead:
    """The row as the API shows it (lists, a lesson, the change stream)."""
    content = None if row.content is None else ledger.readable_content(row.lesson_id, row.content)
    values = {name: getattr(row, name) for name in COLUMNS}
    erased = row.content is not None and content is None
    return LessonRead(**{**values, "content": content}, content_erased=erased)


@router.get("/v1/projections", responses=PROBLEMS)
def projections(request: Request, token: Reader, read_model: ReadModel) -> list[ProjectionResponse]:
    """Each projection's position, the head of the log, the lag, and rebuild progress:
    the lessons read model and the log's Merkle tree (`merkle`)."""
    statuses = [*read_model.status(), request.app.state.audit.status()]
    return [ProjectionResponse.model_validate(status.as_json()) for status in statuses]


@router.post("/v1/projections/{name}/rebuild", status_code=202, responses=PROBLEMS)
def rebuild(name: str, request: Request, token: Admin, read_model: ReadModel) -> RebuildStarted:
    """Rebuild a projection from the first event without downtime, in the background;
    `GET /v1/projections` reports its progress."""
    if name != "lessons":
        raise ApiProblem(404, "not-found", "Unknown projection", f"no projection is named {name!r}")
    state = request.app.state
    try:
        started = start_rebuild(state, state.database, read_model)
    except RebuildRefused as refused:
        title = "Rebuilds run as the schema's owner"
        raise ApiProblem(409, "owner-only", title, str(refused)) from None
    return RebuildStarted(name=name, status="started" if started else "running")
