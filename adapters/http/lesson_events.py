"""Live updates: `GET /v1/lessons/events`, each change of the read model's rows as a
Server-Sent Event whose id is its position, resumable with `Last-Event-ID`.

Every stream of a process waits on one `PositionWatch`, which reads the read model's
position a few times a second (from any process's follower); a stream then reads the log
from where it is up to that position (projections/changes.py). An event id is a position
in the log, which outlives the server: a client that reconnects with `Last-Event-ID`
after a restart, to any server process, receives every change after it, none twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import TypeAdapter
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from adapters.http.dependencies import PROBLEMS, Reader, WholeNumber
from adapters.http.problems import ApiProblem
from adapters.http.reads import LessonRead, readable
from domain import FieldError, InvalidLessonRequest, LessonLedger
from domain.keys import canonical_provider_id, canonical_school_id
from projections.changes import ChangeFilter, LessonChanges, RowChange, SharedPages
from projections.read_model import LessonsReadModel

router = APIRouter(tags=["read model"])

HEARTBEAT_SECONDS = 15.0
"""An idle stream sends its position this often: a proxy keeps it open, and a client
that reconnects resumes from there rather than rescanning what it was not sent."""
_ROW = TypeAdapter(LessonRead)


class PositionWatch:
    """The read model's position, read by one task for every stream of the process, and
    only while a stream waits."""

    def __init__(self, read_model: LessonsReadModel, interval: float = 0.2) -> None:
        self.read_model = read_model
        self.interval = interval
        self.position = 0
        self._changed = asyncio.Event()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    async def beyond(self, position: int, timeout: float) -> int:
        """The read model's position once it is beyond `position`, or after `timeout`."""
        self._waiting += 1
        try:
            if self._task is None or self._task.done():
                self.position = await run_in_threadpool(self.read_model.position)
                self._task = asyncio.create_task(self._poll(), name="read-model-position")
            deadline = time.monotonic() + timeout
            while self.position <= position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
            return self.position
        finally:
            self._waiting -= 1

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.interval)
            try:
                position = await run_in_threadpool(self.read_model.position)
            except Exception:  # the database is away: streams wait, and say nothing new
                continue
            if position != self.position:
                self.position = position
                self._changed.set()
                self._changed = asyncio.Event()


def event_stream(
    request: Request, wanted: ChangeFilter, after: int | None, last_event_id: str | None
) -> EventSourceResponse:
    """The stream of `wanted` rows' changes after `Last-Event-ID` (else `after`, else now):
    the API's endpoint and the pages' use it alike."""
    read_model: LessonsReadModel = request.app.state.read_model
    ledger: LessonLedger = request.app.state.ledger
    start = _resumed_from(last_event_id) if last_event_id else after
    head = read_model.head()
    if start is not None and start > head:
        field = "Last-Event-ID" if last_event_id else "after"
        raise InvalidLessonRequest(
            [FieldError(field=field, message=f"is beyond the last recorded event ({head})")]
        )
    watch: PositionWatch | None = getattr(request.app.state, "position_watch", None)
    if watch is None:
        watch = request.app.state.position_watch = PositionWatch(read_model)
    pages: SharedPages | None = getattr(request.app.state, "shared_pages", None)
    if pages is None:
        pages = request.app.state.shared_pages = SharedPages(read_model.log)
    changes = LessonChanges(
        pages, lambda lesson_id, version: ledger.slots.events(lesson_id, version), wanted
    )
    return EventSourceResponse(
        _events(changes, watch, ledger, read_model, start),
        headers={"Cache-Control": "no-store"},
    )


async def _events(
    changes: LessonChanges,
    watch: PositionWatch,
    ledger: LessonLedger,
    read_model: LessonsReadModel,
    start: int | None,
) -> AsyncIterator[dict[str, Any]]:
    position = start if start is not None else await run_in_threadpool(read_model.position)
    yield _position_event("ready", position)
    said = position  # the last id the client was sent
    said_at = time.monotonic()
    while True:
        upto = await watch.beyond(position, HEARTBEAT_SECONDS)
        while position < upto:
            page = await run_in_threadpool(_page, changes, ledger, position, upto)
            if page is None:  # only gaps up to `upto`
                position = upto
                break
            found, position = page
            for change, data in found:
                yield {"event": "lesson", "id": str(change.position), "data": data}
                said, said_at = change.position, time.monotonic()
        if position > said and time.monotonic() - said_at >= HEARTBEAT_SECONDS:
            yield _position_event("position", position)
            said, said_at = position, time.monotonic()


def _page(
    changes: LessonChanges, ledger: LessonLedger, position: int, upto: int
) -> tuple[list[tuple[RowChange, str]], int] | None:
    """The next page's changes, each with its data as sent (the content opened)."""
    page = changes.next_page(position, upto)
    if page is None:
        return None
    found, position = page
    return [(change, _data(ledger, change)) for change in found], position


def _data(ledger: LessonLedger, change: RowChange) -> str:
    row = readable(ledger, change.row)  # as GET /v1/lessons/{id} shows it
    lesson = orjson.loads(_ROW.dump_json(row))
    data = {"position": change.position, "event": change.event, "lesson": lesson}
    return orjson.dumps(data).decode()


def _position_event(name: str, position: int) -> dict[str, Any]:
    return {"event": name, "id": str(position), "data": f'{{"position":{position}}}'}


def _resumed_from(last_event_id: str) -> int:
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidLessonRequest(
            [FieldError(field="Last-Event-ID", message="must be an event id this stream sent")]
        )
    return int(text)


def change_filter(
    provider_id: str | None, school_id: str | None, lesson_id: UUID | None = None
) -> ChangeFilter:
    """The filter, its ids canonical as the rows hold them; 422 naming a bad one."""
    errors: list[FieldError] = []
    provider = school = None
    try:
        provider = None if provider_id is None else canonical_provider_id(provider_id)
    except ValueError as bad:
        errors.append(FieldError(field="provider_id", message=str(bad)))
    try:
        school = None if school_id is None else canonical_school_id(school_id)
    except ValueError as bad:
        errors.append(FieldError(field="school_id", message=str(bad)))
    if errors:
        raise InvalidLessonRequest(errors)
    return ChangeFilter(provider_id=provider, school_id=school, lesson_id=lesson_id)


@router.get(
    "/v1/lessons/events",
    responses={
        **PROBLEMS,
        200: {
            "description": "A stream of Server-Sent Events: `ready` (id: the position it "
            "starts after), `lesson` (id: the change's position; data: position, event, "
            "lesson: the row as GET /v1/lessons/{id} gives it), `position` when idle",
            "content": {"text/event-stream": {}},
        },
    },
)
async def lesson_events(
    request: Request,
    token: Reader,
    provider_id: str | None = None,
    school_id: str | None = None,
    after: Annotated[
        WholeNumber | None,
        Query(ge=0, description="start after this position (a command's `position`)"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Each change of the read model's rows, live: instead of polling for "is my lesson
    generated yet". Reconnect with `Last-Event-ID` to miss nothing, even across a
    restart. A provider token follows its own provider's lessons only."""
    wanted = change_filter(provider_id, school_id)
    if token.role == "provider":
        if wanted.provider_id not in (None, token.provider_id):
            raise ApiProblem(
                403, "forbidden", "Forbidden", "a provider token follows its own lessons only"
            )
        wanted = replace(wanted, provider_id=token.provider_id)
    return await run_in_threadpool(event_stream, request, wanted, after, last_event_id)
