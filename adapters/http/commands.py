"""The lesson commands: request a lesson slot; record an attempt's generation or failure;
regenerate; cancel. Each answers 201 accepted or 200 replayed, or a problem detail."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Request, Response

from adapters.calendar import calendar_request
from adapters.http.auth import check_provider, not_yours
from adapters.http.dependencies import PROBLEMS, Ledger, Requester, Worker
from adapters.http.idempotency import IdempotencyKey, keyed_ids, request_id_for
from adapters.http.problems import ApiProblem
from adapters.http.schemas import (
    ChangeBody,
    CommandResponse,
    FailureBody,
    GenerationBody,
    LessonRequestBody,
    SingleLessonBody,
)
from adapters.storage.tokens import ApiToken
from domain import CommandResult, LedgerError, LessonLedger, LessonNotFound
from domain.keys import canonical_provider_id

router = APIRouter(prefix="/v1/lessons", tags=["lessons"])
R = TypeVar("R")
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CommandResponse, "description": "Replayed: nothing written"},
    **PROBLEMS,
}


@router.post(
    "/requests", status_code=201, response_model=CommandResponse, responses=COMMAND_RESPONSES
)
async def request_lesson(
    body: Annotated[SingleLessonBody, Body()],
    request: Request,
    token: Requester,
    ledger: Ledger,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Request a lesson slot: 201 accepted, 200 replayed, 409 held by another request.
    Takes the ledger's shape or the calendar front end's (one group of its batch).
    Without a `requestId`, the request's id is derived from the `Idempotency-Key`."""
    given = dict(body) if isinstance(body, LessonRequestBody) else calendar_request(body)
    fields = request_fields(given, token)
    fields["request_id"] = request_id_for(
        fields.get("request_id"), idempotency_key, keyed_ids(request)
    )
    return await command(request, "request", lambda: ledger.request_lesson(**fields))


@router.post(
    "/{lesson_id}/generation",
    status_code=201,
    response_model=CommandResponse,
    responses=COMMAND_RESPONSES,
)
async def record_generation(
    lesson_id: UUID,
    body: GenerationBody,
    request: Request,
    token: Worker,
    ledger: Ledger,
) -> Response:
    """Record the generated lesson of an attempt (worker)."""
    return await command(
        request,
        "record_generation",
        lambda: ledger.record_generation(
            lesson_id=lesson_id,
            attempt=body.attempt,
            content=body.content,
            model=body.model,
            actor=token.actor,
        ),
    )


@router.post(
    "/{lesson_id}/failure",
    status_code=201,
    response_model=CommandResponse,
    responses=COMMAND_RESPONSES,
)
async def record_failure(
    lesson_id: UUID,
    body: FailureBody,
    request: Request,
    token: Worker,
    ledger: Ledger,
) -> Response:
    """Record that generating an attempt failed (worker)."""
    return await command(
        request,
        "record_failure",
        lambda: ledger.record_failure(
            lesson_id=lesson_id,
            attempt=body.attempt,
            reason=body.reason,
            actor=token.actor,
        ),
    )


@router.post(
    "/{lesson_id}/regeneration",
    status_code=201,
    response_model=CommandResponse,
    responses=COMMAND_RESPONSES,
)
async def regenerate(
    lesson_id: UUID,
    body: ChangeBody,
    request: Request,
    token: Requester,
    ledger: Ledger,
) -> Response:
    """Start a new attempt for a generated or failed lesson."""
    return await change(request, "regenerate", ledger.regenerate, lesson_id, body, token)


@router.post(
    "/{lesson_id}/cancellation",
    status_code=201,
    response_model=CommandResponse,
    responses=COMMAND_RESPONSES,
)
async def cancel(
    lesson_id: UUID,
    body: ChangeBody,
    request: Request,
    token: Requester,
    ledger: Ledger,
) -> Response:
    """Cancel a lesson: its slot is free to be requested again."""
    return await change(request, "cancel", ledger.cancel, lesson_id, body, token)


async def command(request: Request, name: str, run: Callable[[], CommandResult]) -> Response:
    """Run a command, counted and timed, on the app's command threads; answer 201
    accepted or 200 replayed."""
    return answer(await in_command_thread(request, lambda: measured(request, name, run)))


async def in_command_thread(request: Request, run: Callable[[], R]) -> R:
    """Run blocking ledger work on the app's command threads, in the request's context
    (its id in the log lines): asyncio's hop to a thread, without the capacity limiter
    and cancel scope that a plain endpoint's thread-pool hop costs every request."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app.state.command_threads, context.run, run)


async def change(
    request: Request,
    name: str,
    method: Callable[..., CommandResult],
    lesson_id: UUID,
    body: ChangeBody,
    token: ApiToken,
) -> Response:
    """A regeneration or cancellation, on a lesson the token may act on."""

    def run() -> CommandResult:
        owned(request.app.state.ledger, lesson_id, token)
        return measured(
            request,
            name,
            lambda: method(
                lesson_id=lesson_id,
                request_id=body.request_id,
                actor=token.actor,
                reason=body.reason,
                correlation_id=body.correlation_id,
                source=token.source,
            ),
        )

    return answer(await in_command_thread(request, run))


def measured(request: Request, command: str, run: Callable[[], R]) -> R:
    """Run a command, counting its outcome and timing it."""
    metrics = request.app.state.metrics
    with metrics.latency.labels(command).time():
        try:
            result = run()
        except LedgerError as error:
            metrics.commands.labels(command, type(error).__name__).inc()
            raise
    outcome = getattr(result, "outcome", "done")
    metrics.commands.labels(command, outcome).inc()
    return result


def answer(result: CommandResult) -> Response:
    """201 accepted or 200 replayed, a CommandResponse encoded at once (FastAPI would
    validate and serialize the model again)."""
    body = {
        "lesson_id": str(result.lesson_id),
        "outcome": result.outcome,
        "attempt": result.attempt,
        "position": result.position,
    }
    status = 201 if result.outcome == "accepted" else 200
    return Response(orjson.dumps(body), status, media_type="application/json")


def request_fields(fields: dict[str, Any], token: ApiToken) -> dict[str, Any]:
    """A request's fields with the actor and, for a provider token, its provider."""
    if token.role == "provider":
        given = fields.get("provider_id")
        if given is None:
            fields["provider_id"] = token.provider_id
        else:
            try:
                canonical = canonical_provider_id(given)
            except ValueError:
                canonical = None  # the ledger names what is wrong with it
            if canonical is not None and canonical != token.provider_id:
                raise ApiProblem(
                    403,
                    "forbidden",
                    "Forbidden",
                    "a provider token requests lessons for its own provider only",
                )
    return {**fields, "actor": token.actor, "source": token.source}


def owned(ledger: LessonLedger, lesson_id: UUID, token: ApiToken) -> None:
    """404 for an unknown lesson; a provider token gets 403 for any lesson not its own."""
    lesson = ledger.get_lesson(lesson_id)
    if lesson is None:
        if token.role == "provider":
            raise not_yours(lesson_id)
        raise LessonNotFound(f"no lesson has the id {lesson_id}")
    check_provider(token, lesson.provider_id, lesson_id)
