"""Reads from the `lessons` read model, and the projections' status and rebuild.

`min_position` (a command's `position`) waits, up to 5 s, until the read model has
caught up to that command: read-your-writes across processes.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from adapters.http.auth import not_yours
from adapters.http.dependencies import PROBLEMS, Admin, Ledger, Reader, ReadModel, WholeNumber
from adapters.http.problems import ApiProblem
from domain import FieldError, InvalidLessonRequest, LessonLedger, LessonNotFound
from projections.lessons import LessonRow
from projections.read_model import InvalidLessonQuery, LessonsReadModel

router = APIRouter(tags=["read model"])


class LessonListResponse(BaseModel):
    """One page of lessons; pass `next_cursor` as `cursor` for the next (None: last)."""

    items: list[LessonRow]
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


def caught_up(request: Request, read_model: LessonsReadModel, min_position: int | None) -> int:
    """The read model's position, after waiting for `min_position` if one was given."""
    if min_position is not None:
        if min_position > read_model.head():
            raise InvalidLessonRequest(
                [
                    FieldError(
                        field="min_position",
                        message=f"is beyond the last recorded event ({read_model.head()}): "
                        "pass the position a command answered",
                    )
                ]
            )
        wait = request.app.state.settings.min_position_wait_seconds
        if not read_model.wait_for(min_position, timeout=wait):
            raise ApiProblem(
                503,
                "not-caught-up",
                "Read model behind",
                f"the read model has not reached position {min_position} within {wait:g} s "
                f"(it is at {read_model.position()}); try again",
            )
    return read_model.position()


@router.get("/v1/lessons", responses=PROBLEMS)
def list_lessons(
    request: Request,
    token: Reader,
    read_model: ReadModel,
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
    position = caught_up(request, read_model, min_position)
    try:
        page = read_model.list_lessons(
            provider_id=provider_id,
            school_id=school_id,
            date_from=date_from,
            date_to=date_to,
            status=status,
            limit=limit,
            cursor=cursor,
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
    read_model: ReadModel,
    ledger: Ledger,
    min_position: MinPosition = None,
) -> LessonRow:
    """One lesson from the read model (404 when it has none, yet: see `min_position`)."""
    caught_up(request, read_model, min_position)
    found = read_model.get_lesson(lesson_id)
    if token.role == "provider" and (found is None or found.provider_id != token.provider_id):
        raise not_yours(lesson_id)
    if found is None:
        raise LessonNotFound(f"no lesson has the id {lesson_id} in the read model")
    return readable(ledger, found)


def readable(ledger: LessonLedger, row: LessonRow) -> LessonRow:
    """A row with its content opened (the read model keeps it sealed): None when a
    student of the lesson, or its date, was erased."""
    if row.content is None:
        return row
    return replace(row, content=ledger.readable_content(row.lesson_id, row.content))


@router.get("/v1/projections", responses=PROBLEMS)
def projections(token: Reader, read_model: ReadModel) -> list[ProjectionResponse]:
    """Each projection's position, the head of the log, the lag, and rebuild progress."""
    return [ProjectionResponse.model_validate(status.as_json()) for status in read_model.status()]


@router.post("/v1/projections/{name}/rebuild", status_code=202, responses=PROBLEMS)
def rebuild(name: str, request: Request, token: Admin, read_model: ReadModel) -> RebuildStarted:
    """Rebuild a projection from the first event without downtime, in the background;
    `GET /v1/projections` reports its progress."""
    if name != "lessons":
        raise ApiProblem(404, "not-found", "Unknown projection", f"no projection is named {name!r}")
    running: threading.Thread | None = getattr(request.app.state, "rebuild_thread", None)
    if running is not None and running.is_alive():
        return RebuildStarted(name=name, status="running")
    thread = threading.Thread(target=read_model.rebuild, name="rebuild-lessons", daemon=True)
    request.app.state.rebuild_thread = thread
    thread.start()
    return RebuildStarted(name=name, status="started")
