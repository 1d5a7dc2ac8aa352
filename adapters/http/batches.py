"""The batch endpoint: up to 500 lesson requests at once, in the calendar front end's shape
as it sends it or in the ledger's own, with `Idempotency-Key`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import Discriminator, Tag

from adapters.calendar import CalendarBatch, calendar_item
from adapters.http.commands import measured, request_fields
from adapters.http.dependencies import PROBLEMS, Ledger, Requester
from adapters.http.idempotency import IdempotencyKey, keyed_ids
from adapters.http.problems import invalid, problem_for
from adapters.http.schemas import BatchBody, BatchItemError, BatchItemResponse, BatchResponse
from adapters.randomness import random_uuid
from adapters.storage.idempotency import IdempotencyStore, StoredResponse
from adapters.storage.tokens import ApiToken
from domain import BatchResult, FieldError, LessonLedger

router = APIRouter(prefix="/v1/lessons", tags=["lessons"])


CalendarOrLedgerBatch = Annotated[
    Annotated[CalendarBatch, Tag("calendar-batch")] | Annotated[BatchBody, Tag("ledger-batch")],
    Discriminator(
        lambda v: "calendar-batch" if isinstance(v, dict) and "batch" in v else "ledger-batch"
    ),
]


@router.post(
    "/requests/batch", response_model=BatchResponse, responses={409: PROBLEMS[409], **PROBLEMS}
)
def request_batch(
    body: Annotated[CalendarOrLedgerBatch, Body()],
    request: Request,
    token: Requester,
    ledger: Ledger,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Up to 500 requests, `partial` (each decided on its own) or `atomic` (all or nothing;
    409 when any is rejected). Takes the calendar front end's `{"batch": [...]}` as it is
    sent, or `{"lessons": [...], "mode": ..., "batch_id": ...}`. A repeated
    `Idempotency-Key` with the same body returns the first response and writes nothing;
    the batch's id and its items' request ids are derived from the key."""
    store: IdempotencyStore = request.app.state.idempotency
    scope = token.provider_id or token.token_id
    ids = keyed_ids(request)
    fingerprint = ids.fingerprint(
        json.dumps(body.model_dump(mode="json", warnings=False), sort_keys=True).encode()
    )
    # Only the id derived from the key is kept and looked up, never the key as sent.
    key_id = ids.derive(idempotency_key) if idempotency_key is not None else None
    if key_id is not None:
        first = store.find(scope, key_id)
        if first is not None:
            return replay_first_response(first, fingerprint)

    status, payload = run_batch(body, request, token, ledger, key_id)
    if key_id is not None:
        kept = store.remember(scope, key_id, StoredResponse(fingerprint, status, payload))
        status, payload = kept.status, kept.body
    return JSONResponse(
        payload,
        status_code=status,
        media_type="application/problem+json" if status >= 400 else None,
    )


def replay_first_response(first: StoredResponse, fingerprint: str) -> JSONResponse:
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
    body: CalendarBatch | BatchBody,
    request: Request,
    token: ApiToken,
    ledger: LessonLedger,
    key_id: str | None,
) -> tuple[int, dict[str, Any]]:
    batch_id: str | None
    if isinstance(body, CalendarBatch):
        batch_id = key_id or f"batch-{random_uuid()}"
        items = [
            request_fields(calendar_item(group, index, batch_id, provider_id=None), token)
            for index, group in enumerate(body.batch)
        ]
        mode = "partial"
    else:
        batch_id = body.batch_id or key_id
        items = [request_fields(dict(item), token) for item in body.lessons]
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
