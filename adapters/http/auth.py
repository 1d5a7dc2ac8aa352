"""Bearer-token authentication and the roles: `provider` (bound to one provider id),
`worker` (records generation results), `admin` (everything)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from adapters.auth.bearer import BearerTokens
from adapters.auth.errors import KeysUnavailable, Unauthenticated
from adapters.http.problems import ApiProblem
from adapters.storage.tokens import ApiToken

bearer = HTTPBearer(
    auto_error=False,
    description="A token from `lesson-ledger tokens create`, or a JWT of the product's "
    "sign-in where LESSON_LEDGER_JWT_* is set",
)


async def current_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> ApiToken:
    """The token the request carries; 401 saying why without a valid one."""
    if credentials is None:
        raise ApiProblem(
            401, "unauthenticated", "Unauthenticated", "send Authorization: Bearer <token>"
        )
    return await resolve_token(request, credentials.credentials)


async def resolve_token(request: Request, text: str) -> ApiToken:
    """Whom a token's text speaks for (the ledger's own, or a JWT); ApiProblem 401 saying
    why when it is not valid, 503 when a JWT's signing keys cannot be had. The one check
    of a token: the bearer dependency and the pages' sign-in both call it. Async: a token
    checked a moment ago is remembered (adapters/auth/bearer.py), and only a database read
    or a signature check goes to the thread pool; a plain function would cost every
    request that hop."""
    tokens: BearerTokens = request.app.state.bearer
    token = tokens.remembered(text)
    if token is not None:
        return token
    try:
        return await run_in_threadpool(tokens.authenticate, text)
    except Unauthenticated as refused:
        raise ApiProblem(401, "unauthenticated", "Unauthenticated", str(refused)) from None
    except KeysUnavailable as unavailable:
        raise ApiProblem(503, "unavailable", "Signing keys unavailable", str(unavailable)) from None


def allow(
    *roles: str,
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[ApiToken]]:
    """A dependency that lets only these roles through (403 otherwise). Async, as it does
    no I/O: a plain function would cost each request a hop to the thread pool."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiToken:
        # current_token called, not depended on: each level of dependencies costs every
        # request FastAPI's solving of it.
        token = await current_token(request, credentials)
        if token.role not in roles:
            raise ApiProblem(
                403,
                "forbidden",
                "Forbidden",
                f"a {token.role} token cannot do this (needs {' or '.join(roles)})",
            )
        return token

    return check


def not_yours(lesson_id: object) -> ApiProblem:
    """The one answer a provider token gets for any lesson that is not its own, unknown
    lessons included, so it cannot tell another provider's lessons from no lesson."""
    return ApiProblem(
        403, "forbidden", "Forbidden", f"lesson {lesson_id} is not one of this provider's lessons"
    )


def check_provider(token: ApiToken, provider_id: str, lesson_id: object) -> None:
    if token.role == "provider" and token.provider_id != provider_id:
        raise not_yours(lesson_id)
