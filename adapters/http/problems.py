"""Errors as data: RFC 9457 problem details (`application/problem+json`) for every
error the API answers, naming the field or the holder."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain import (
    IdempotencyMismatch,
    InvalidLessonRequest,
    LedgerUnavailable,
    LessonConflict,
    LessonNotFound,
    StaleGeneration,
)
from domain.errors import FieldError, LedgerError
from projections.view import ShapeOutdated

PROBLEM_JSON = "application/problem+json"
BODY_SHAPES = frozenset({"calendar-batch", "ledger-batch", "calendar-lesson", "ledger-lesson"})
"""The tags of the bodies taken in two shapes: not part of a bad field's name."""


class FieldProblem(BaseModel):
    """One bad field and what was wrong with it."""

    field: str
    message: str


class HolderInfo(BaseModel):
    """The request that holds a lesson slot."""

    request_id: str
    actor: str
    requested_at: str
    status: str
    attempt: int


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None
    holder: HolderInfo | None = None
    request_id: str | None = None


class ApiProblem(Exception):
    """An error the API answers as a problem detail."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail, self.extra = (
            status,
            kind,
            title,
            detail,
            extra,
        )


def problem_for(error: LedgerError) -> ApiProblem:
    """The problem detail for a ledger error."""
    if isinstance(error, InvalidLessonRequest):
        return invalid(error.errors)
    if isinstance(error, LessonConflict):
        holder = error.holder.as_dict() if error.holder else None
        return ApiProblem(409, "conflict", "Lesson slot conflict", str(error), holder=holder)
    if isinstance(error, StaleGeneration):
        return ApiProblem(409, "stale", "Stale generation", str(error))
    if isinstance(error, IdempotencyMismatch):
        return ApiProblem(
            409, "idempotency-mismatch", "Request id used for another request", str(error)
        )
    if isinstance(error, LessonNotFound):
        return ApiProblem(404, "not-found", "Lesson not found", str(error))
    if isinstance(error, LedgerUnavailable):
        return ApiProblem(503, "unavailable", "Ledger unavailable", str(error))
    return ApiProblem(409, "rejected", "Rejected", str(error))


def invalid(errors: list[FieldError], detail: str | None = None) -> ApiProblem:
    return ApiProblem(
        422,
        "invalid-request",
        "Invalid request",
        detail or "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        errors=list(errors),
    )


def problem_response(problem: ApiProblem, request: Request | None = None) -> JSONResponse:
    body = {
        "type": f"urn:lesson-ledger:problem:{problem.kind}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    if request is not None and getattr(request.state, "request_id", None):
        body["request_id"] = request.state.request_id
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)


def validation_problem(error: RequestValidationError) -> ApiProblem:
    """FastAPI's validation errors, as fields and messages."""
    fields: list[FieldError] = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())][1:]  # without "body", "query"...
        location = [part for part in location if part not in BODY_SHAPES]
        kind = item.get("type", "")
        if kind == "json_invalid":
            fields.append(FieldError(field="body", message="is not valid JSON"))
            continue
        message = str(item.get("msg", "is invalid"))
        if kind == "value_error":  # our own check's words, without pydantic's prefix
            message = str(item.get("ctx", {}).get("error", message))
        if kind == "extra_forbidden":
            message = "is not a known field"
        elif kind == "missing":
            message = "is missing"
        fields.append(FieldError(field=".".join(location) or "body", message=message))
    return invalid(fields)


def not_sent_as_json(content_type: str) -> ApiProblem:
    """A body whose Content-Type is not JSON is not read as JSON (FastAPI hands it over as
    bytes): that is the problem, not its shape (curl's `-d` sends a form's type)."""
    sent = f"it came as {content_type[:80]!r}" if content_type else "it came without one"
    message = f"send it as JSON, with Content-Type: application/json ({sent})"
    return ApiProblem(
        415,
        "unsupported-media-type",
        "Body not sent as JSON",
        f"body: {message}",
        errors=[FieldError(field="body", message=message)],
    )


def _about_the_body(error: RequestValidationError) -> bool:
    return any(tuple(item.get("loc", ()))[:1] == ("body",) for item in error.errors())


def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def unreadable_because(cause: BaseException | None) -> str:
    """Why the JSON parser gave up on a body (FastAPI answers 400 for each, the parser's
    error as the cause), said as it is."""
    if isinstance(cause, UnicodeDecodeError):
        return "is not UTF-8 encoded JSON"
    if isinstance(cause, RecursionError):
        return "is nested too deeply to read"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "holds a number too large to read (over 4300 digits)"
    return "cannot be read as JSON"


def install(app: Any) -> None:
    """Answer every error as a problem detail; never a stack trace."""

    async def on_api_problem(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiProblem)
        return problem_response(error, request)

    async def on_ledger_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, LedgerError)
        return problem_response(problem_for(error), request)

    async def on_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        content_type = request.headers.get("content-type", "")
        if _about_the_body(error) and not _is_json(content_type):
            return problem_response(not_sent_as_json(content_type), request)
        return problem_response(validation_problem(error), request)

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 400:  # the body could not be read as JSON text at all
            message = unreadable_because(error.__cause__)
            unreadable = ApiProblem(
                400,
                "unreadable-body",
                "Unreadable body",
                f"body: {message}",
                errors=[FieldError(field="body", message=message)],
            )
            return problem_response(unreadable, request)
        titles = {404: "Not found", 405: "Method not allowed"}
        problem = ApiProblem(
            error.status_code, "http", titles.get(error.status_code, "Error"), str(error.detail)
        )
        return problem_response(problem, request)

    async def on_read_model_upgrading(request: Request, error: Exception) -> JSONResponse:
        upgrading = ApiProblem(
            503,
            "read-model-upgrading",
            "Read model upgrading",
            "the read model is being rebuilt for this release; try again shortly",
        )
        return problem_response(upgrading, request)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        return problem_response(
            ApiProblem(
                500,
                "internal",
                "Internal error",
                "the ledger failed unexpectedly; the request id identifies it in the logs",
            ),
            request,
        )

    app.add_exception_handler(ApiProblem, on_api_problem)
    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ShapeOutdated, on_read_model_upgrading)
    app.add_exception_handler(Exception, on_unexpected)


async def known_query_parameters_only(request: Request) -> None:
    """422 for a query parameter the endpoint does not take: a misspelt filter
    (`?provider=...`) must not quietly widen a listing to every lesson."""
    if not request.scope.get("query_string"):
        return  # most requests, commands above all
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {param.alias for param in _all_query_params(dependant)}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise invalid(
            [
                FieldError(field=name or "(empty)", message="is not a known query parameter")
                for name in unknown
            ]
        )


def _all_query_params(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += _all_query_params(sub)
    return found
