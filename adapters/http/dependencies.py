"""What the endpoints depend on, as FastAPI dependencies: the ledger, the read model and
the read routing (replica or primary) of the app, the roles a token must have, and the
problem responses they document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BeforeValidator

from adapters.http.auth import allow
from adapters.read_routing import ReadRouting
from adapters.storage.tokens import ApiToken
from domain import LessonLedger
from projections.read_model import LessonsReadModel

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    for status, text in [
        (400, "The body is not JSON the API can read"),
        (401, "No valid bearer token"),
        (403, "Outside the token's role or provider"),
        (404, "Unknown lesson"),
        (409, "Conflict (names the holder) or stale"),
        (413, "Body over 1 MiB"),
        (415, "Body not sent as JSON (its Content-Type)"),
        (422, "Invalid input, every bad field named"),
        (503, "The ledger's database is unavailable"),
    ]
}
"""The problem details an endpoint may answer, for the OpenAPI document."""


async def ledger_of(request: Request) -> LessonLedger:
    ledger: LessonLedger = request.app.state.ledger
    return ledger


async def read_model_of(request: Request) -> LessonsReadModel:
    read_model: LessonsReadModel = request.app.state.read_model
    return read_model


async def reads_of(request: Request) -> ReadRouting:
    reads: ReadRouting = request.app.state.reads
    return reads


def _whole_number(value: object) -> object:
    """A query parameter's digits, nothing else: not `0.0`, `1e3` or ` 5`."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
"""An integer query parameter, as digits only (pydantic's lax mode takes `0.0`)."""

Ledger = Annotated[LessonLedger, Depends(ledger_of)]
ReadModel = Annotated[LessonsReadModel, Depends(read_model_of)]
Reads = Annotated[ReadRouting, Depends(reads_of)]
"""Where queries and histories are read: the replica while it is usable, else the primary."""
Requester = Annotated[ApiToken, Depends(allow("admin", "provider"))]
Worker = Annotated[ApiToken, Depends(allow("admin", "worker"))]
Reader = Annotated[ApiToken, Depends(allow("admin", "provider", "worker"))]
Admin = Annotated[ApiToken, Depends(allow("admin"))]
