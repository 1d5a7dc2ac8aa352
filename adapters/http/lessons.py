"""The lesson endpoints: commands (single and batch), history."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Discriminator, Tag

from adapters.http.auth import allow, check_provider, not_yours
from adapters.http.problems import ApiProblem, invalid, problem_for
from adapters.http.schemas import (
    BatchBody,
    BatchItemError,
    BatchItemResponse,
    BatchResponse,
    CalendarBatchBody,
    CalendarGroup,
    ChangeBody,
    CommandResponse,
    FailureBody,
    GenerationBody,
    HistoryResponse,
    LessonRequestBody,
)
from adapters.storage.idempotency import IdempotencyStore, StoredResponse, body_hash
from adapters.storage.tokens import ApiToken
from domain import (
    BatchResult,
    CommandResult,
    FieldError,
    InvalidLessonRequest,
    LedgerError,
    LessonLedger,
    LessonNotFound,
)
from domain.keys import canonical_provider_id

router = APIRouter(prefix="/v1/lessons", tags=["lessons"])
R = TypeVar("R")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    for status, text in [
        (400, "The body is not UTF-8 JSON"),
        (401, "No valid bearer token"),
        (403, "Outside the token's role or provider"),
        (404, "Unknown lesson"),
        (409, "Conflict (names the holder) or stale"),
        (413, "Body over 1 MiB"),
        (422, "Invalid input, every bad field named"),
        (503, "The ledger's database is unavailable"),
    ]
}


COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CommandResponse, "description": "Replayed: nothing written"},
    **PROBLEMS,
}


async def ledger_of(request: Request) -> LessonLedger:
    ledger: LessonLedger = request.app.state.ledger
    return ledger


Ledger = Annotated[LessonLedger, Depends(ledger_of)]
Requester = Annotated[ApiToken, Depends(allow("admin", "provider"))]
Worker = Annotated[ApiToken, Depends(allow("admin", "worker"))]
Reader = Annotated[ApiToken, Depends(allow("admin", "provider", "worker"))]


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


def answer(result: CommandResult, response: Response) -> CommandResponse:
    response.status_code = 201 if result.outcome == "accepted" else 200
    return CommandResponse(
        lesson_id=result.lesson_id,
        outcome=result.outcome,
        attempt=result.attempt,
        position=result.position,
    )


@router.post("/requests", status_code=201, responses=COMMAND_RESPONSES)
def request_lesson(
    body: LessonRequestBody,
    request: Request,
    response: Response,
    token: Requester,
    ledger: Ledger,
) -> CommandResponse:
    """Request a lesson slot: 201 accepted, 200 replayed, 409 held by another request."""
    fields = request_fields(body.model_dump(), token)
    return command(request, response, "request", lambda: ledger.request_lesson(**fields))


CalendarOrLedgerBatch = Annotated[
    Annotated[CalendarBatchBody, Tag("calendar-batch")] | Annotated[BatchBody, Tag("ledger-batch")],
    Discriminator(
        lambda v: "calendar-batch" if isinstance(v, dict) and "batch" in v else "ledger-batch"
    ),
]


@router.post("/requests/batch", responses={409: PROBLEMS[409], **PROBLEMS})
def request_batch(
    body: Annotated[CalendarOrLedgerBatch, Body()],
    request: Request,
    token: Requester,
    ledger: Ledger,
    idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
) -> BatchResponse:
    """Up to 500 requests, `partial` (each decided on its own) or `atomic` (all or nothing;
    409 when any is rejected). Takes the calendar front end's `{"batch": [...]}` as it is
    sent, or `{"lessons": [...], "mode": ..., "batch_id": ...}`. A repeated
    `Idempotency-Key` with the same body returns the first response and writes nothing."""
    store: IdempotencyStore = request.app.state.idempotency
    scope = token.provider_id or token.token_id
    fingerprint = body_hash(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode())
    if idempotency_key is not None:
        first = store.find(scope, idempotency_key)
        if first is not None:
            return replay_first_response(first, fingerprint)

    status, payload = run_batch(body, request, token, ledger, idempotency_key)
    if idempotency_key is not None:
        kept = store.remember(scope, idempotency_key, StoredResponse(fingerprint, status, payload))
        status, payload = kept.status, kept.body
    return JSONResponse(
        payload,
        status_code=status,  # type: ignore[return-value]
        media_type="application/problem+json" if status >= 400 else None,
    )


def replay_first_response(first: StoredResponse, fingerprint: str) -> Any:
    if first.body_hash != fingerprint:
        raise invalid(
            [
                FieldError(
                    field="Idempotency-Key",
                    message="was already used with a different body; use a new key for a new batch",
                )
            ]
        )
    return JSONResponse(
        first.body,
        status_code=first.status,
        media_type="application/problem+json" if first.status >= 400 else None,
    )


def run_batch(
    body: CalendarBatchBody | BatchBody,
    request: Request,
    token: ApiToken,
    ledger: LessonLedger,
    idempotency_key: str | None,
) -> tuple[int, dict[str, Any]]:
    if isinstance(body, CalendarBatchBody):
        batch_id = idempotency_key or f"batch-{uuid4()}"
        items = [
            calendar_item(group, index, batch_id, token) for index, group in enumerate(body.batch)
        ]
        mode = "partial"
    else:
        batch_id = body.batch_id or idempotency_key
        items = [request_fields(item.model_dump(), token) for item in body.lessons]
        mode = body.mode
    request.app.state.metrics.batch_size.observe(len(items))
    result = measured(
        request, "batch", lambda: ledger.request_batch(items, mode=mode, batch_id=batch_id)
    )
    payload = batch_response(result).model_dump(mode="json")
    if mode == "atomic" and not result.written:
        return 409, {
            "type": "urn:lesson-ledger:problem:atomic-batch-rejected",
            "title": "Atomic batch rejected",
            "status": 409,
            "detail": "nothing was written: "
            + ", ".join(f"{k} {v}" for k, v in result.summary.items() if v),
            **payload,
        }
    return 200, payload


def calendar_item(
    group: CalendarGroup, index: int, batch_id: str, token: ApiToken
) -> dict[str, Any]:
    """A calendar group as a ledger request: its generation fields become the details,
    the provider comes from the provider's token."""
    details = {
        name: value
        for name, value in group.model_dump(
            include={
                "students",
                "subject",
                "subject_type",
                "duration",
                "topic",
                "teacher_role",
                "focus_skills",
            }
        ).items()
        if value is not None
    }
    return request_fields(
        {
            "provider_id": group.provider_id,
            "school_id": group.school_id,
            "lesson_date": group.lesson_date,
            "time_slot": group.time_slot,
            "kind": group.kind,
            "request_id": group.request_id or f"{batch_id}-{index}",
            "details": details or None,
            "correlation_id": batch_id,
        },
        token,
    )


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
    return {**fields, "actor": token.actor, "source": "api"}


def batch_response(result: BatchResult) -> BatchResponse:
    items = []
    for item in result.items:
        error = None
        if item.error is not None:
            problem = problem_for(item.error)
            error = BatchItemError(type=problem.kind, detail=problem.detail, **problem.extra)
        items.append(
            BatchItemResponse(
                index=item.index,
                outcome=item.outcome,
                lesson_id=item.lesson_id,
                attempt=item.attempt,
                position=item.position,
                error=error,
            )
        )
    return BatchResponse(
        batch_id=result.batch_id,
        mode=result.mode,
        written=result.written,
        items=items,
        summary=result.summary,
    )


def owned(ledger: LessonLedger, lesson_id: UUID, token: ApiToken) -> None:
    """404 for an unknown lesson; a provider token gets 403 for any lesson not its own."""
    lesson = ledger.get_lesson(lesson_id)
    if lesson is None:
        if token.role == "provider":
            raise not_yours(lesson_id)
        raise LessonNotFound(f"no lesson has the id {lesson_id}")
    check_provider(token, lesson.provider_id, lesson_id)


@router.post("/{lesson_id}/generation", status_code=201, responses=COMMAND_RESPONSES)
def record_generation(
    lesson_id: UUID,
    body: GenerationBody,
    request: Request,
    response: Response,
    token: Worker,
    ledger: Ledger,
) -> CommandResponse:
    """Record the generated lesson of an attempt (worker)."""
    return command(
        request,
        response,
        "record_generation",
        lambda: ledger.record_generation(
            lesson_id=lesson_id,
            attempt=body.attempt,
            content=body.content,
            model=body.model,
            actor=token.actor,
        ),
    )


@router.post("/{lesson_id}/failure", status_code=201, responses=COMMAND_RESPONSES)
def record_failure(
    lesson_id: UUID,
    body: FailureBody,
    request: Request,
    response: Response,
    token: Worker,
    ledger: Ledger,
) -> CommandResponse:
    """Record that generating an attempt failed (worker)."""
    return command(
        request,
        response,
        "record_failure",
        lambda: ledger.record_failure(
            lesson_id=lesson_id,
            attempt=body.attempt,
            reason=body.reason,
            actor=token.actor,
        ),
    )


@router.post("/{lesson_id}/regeneration", status_code=201, responses=COMMAND_RESPONSES)
def regenerate(
    lesson_id: UUID,
    body: ChangeBody,
    request: Request,
    response: Response,
    token: Requester,
    ledger: Ledger,
) -> CommandResponse:
    """Start a new attempt for a generated or failed lesson."""
    return change(request, response, "regenerate", ledger.regenerate, lesson_id, body, token)


@router.post("/{lesson_id}/cancellation", status_code=201, responses=COMMAND_RESPONSES)
def cancel(
    lesson_id: UUID,
    body: ChangeBody,
    request: Request,
    response: Response,
    token: Requester,
    ledger: Ledger,
) -> CommandResponse:
    """Cancel a lesson: its slot is free to be requested again."""
    return change(request, response, "cancel", ledger.cancel, lesson_id, body, token)


def command(
    request: Request, response: Response, name: str, run: Callable[[], CommandResult]
) -> CommandResponse:
    """Run a command, counted and timed, and answer 201 accepted or 200 replayed."""
    return answer(measured(request, name, run), response)


def change(
    request: Request,
    response: Response,
    name: str,
    method: Callable[..., CommandResult],
    lesson_id: UUID,
    body: ChangeBody,
    token: ApiToken,
) -> CommandResponse:
    """A regeneration or cancellation, on a lesson the token may act on."""
    owned(request.app.state.ledger, lesson_id, token)
    return command(
        request,
        response,
        name,
        lambda: method(
            lesson_id=lesson_id,
            request_id=body.request_id,
            actor=token.actor,
            reason=body.reason,
            correlation_id=body.correlation_id,
        ),
    )


@router.get("/{lesson_id}/history", responses=PROBLEMS)
def history(
    lesson_id: UUID,
    token: Reader,
    ledger: Ledger,
    as_of_version: Annotated[int | None, Query(ge=1)] = None,
    as_of: Annotated[datetime | None, Query(description="ISO timestamp with zone")] = None,
) -> HistoryResponse:
    """Every event and rejected attempt of a lesson, in order, and its state as it was."""
    if as_of is not None and as_of.tzinfo is None:
        raise InvalidLessonRequest(
            [FieldError(field="as_of", message="needs a time zone, e.g. ...+00:00")]
        )
    owned(ledger, lesson_id, token)
    found = ledger.history(lesson_id, as_of_version=as_of_version, as_of=as_of)
    state = found.state.as_dict() if found.state else None
    if state is not None:
        state.pop("students", None)
        state.pop("details", None)
    return HistoryResponse.model_validate(
        {
            "lesson_id": lesson_id,
            "entries": [vars(entry) for entry in found.entries],
            "state": state,
        }
    )
