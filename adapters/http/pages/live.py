"""The pages' live updates: the API's event stream (adapters/http/lesson_events.py) for a
signed-in browser, scoped as its token is."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from adapters.http.dependencies import WholeNumber
from adapters.http.lesson_events import change_filter, event_stream
from adapters.http.pages.session import PageForbidden, SignedIn

router = APIRouter(include_in_schema=False)


@router.get("/live/lessons")
async def live_lessons(
    request: Request,
    browser: SignedIn,
    provider_id: str | None = None,
    school_id: str | None = None,
    lesson_id: UUID | None = None,
    after: WholeNumber | None = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    wanted = change_filter(provider_id, school_id, lesson_id)
    token = browser.token
    if token.role == "provider" and wanted.provider_id != token.provider_id:
        raise PageForbidden("a provider's session follows its own provider's lessons only")
    return await run_in_threadpool(event_stream, request, wanted, after, last_event_id)
