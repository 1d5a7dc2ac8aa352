"""Signing in with a pasted API token, and out."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from adapters.http.auth import resolve_token
from adapters.http.pages.rendering import render
from adapters.http.pages.session import (
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    PostedBy,
    forget_session_cookie,
    resources,
    set_session_cookie,
)
from adapters.http.problems import ApiProblem

router = APIRouter(include_in_schema=False)


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//other.site`)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/calendar"


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/calendar", status_code=303)


@router.get("/sign-in")
async def sign_in_page(
    request: Request, next: str | None = None, signed_out: bool = False
) -> Response:
    return await _form(request, next, "You are signed out." if signed_out else None, 200)


async def _form(request: Request, next: str | None, message: str | None, status: int) -> Response:
    _, keys = await resources(request)
    nonce = secrets.token_urlsafe(24)
    context = {"next": _local(next), "csrf_token": nonce, "message": message}
    response = render(request, "sign_in.html", context, status_code=status)
    response.set_cookie(
        SIGN_IN_COOKIE,
        keys.sign_in_pair(nonce),
        max_age=SIGN_IN_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/sign-in",
    )
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    token: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/calendar",
) -> Response:
    """A session for a valid token; the form again, saying why, for any other."""
    sessions, keys = await resources(request)
    nonce = keys.sign_in_nonce(request.cookies.get(SIGN_IN_COOKIE))
    if nonce is None or not hmac.compare_digest(nonce.encode(), csrf_token.encode()):
        message = "The form had expired or was not sent from this page: paste the token again."
        return await _form(request, next, message, 403)
    try:
        # The API's own check of a bearer token, whatever kind of token it is.
        api_token = await resolve_token(request, token.strip())
    except ApiProblem as refused:
        return await _form(request, next, f"Not signed in: {refused.detail}.", refused.status)
    lifetime = keys.lifetime
    session_id, _ = await run_in_threadpool(sessions.start, api_token, lifetime)
    response = RedirectResponse(_local(next), status_code=303)
    set_session_cookie(request, response, keys, session_id)
    response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in", httponly=True, samesite="strict")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, browser: PostedBy) -> Response:
    sessions, _ = await resources(request)
    await run_in_threadpool(sessions.end, browser.session_id)
    response = RedirectResponse("/sign-in?signed_out=true", status_code=303)
    forget_session_cookie(response)
    return response
