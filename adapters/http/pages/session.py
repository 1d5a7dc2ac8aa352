"""The pages' session: a signed, expiring, HttpOnly, `SameSite=Strict` cookie naming a
session kept in the database (adapters/storage/page_sessions.py), and the CSRF token
every form carries. Both are signed with the ledger key file's `session_key`, which
every server process shares."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Form, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapters.keys.keyfile import KEY_FILE_SETTING, open_keys
from adapters.settings import Settings
from adapters.storage.database import Database
from adapters.storage.page_sessions import PageSession, PageSessions
from adapters.storage.tokens import ApiToken, TokenStore

COOKIE = "ledger_session"
SIGN_IN_COOKIE = "ledger_sign_in"
"""Before sign-in there is no session: the sign-in form's CSRF token is bound to this
short-lived cookie instead (a double submit), so no other site can sign a browser in."""
SIGN_IN_SECONDS = 3600


class SignInNeeded(Exception):
    """No live session: a page answers with the sign-in page, a stream with 401."""


class PageForbidden(Exception):
    """The session's token may not see this: the 403 page, which shows nothing of it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CsrfRefused(Exception):
    """A form posted without the CSRF token of its session: refused, nothing done."""


@dataclass(frozen=True)
class Browser:
    """A signed-in browser: its session, its token, and the CSRF token its forms carry."""

    session_id: str
    session: PageSession
    csrf_token: str

    @property
    def token(self) -> ApiToken:
        return self.session.token


class SessionKeys:
    """The cookie's signer and the CSRF tokens, from the session key."""

    def __init__(self, key: bytes, lifetime: timedelta) -> None:
        self.key = key
        self.lifetime = lifetime
        self.cookies = URLSafeTimedSerializer(key, salt="lesson-ledger.page-session")
        self.sign_in = URLSafeTimedSerializer(key, salt="lesson-ledger.sign-in")

    def cookie_value(self, session_id: str) -> str:
        return self.cookies.dumps(session_id)

    def session_id(self, cookie: str | None) -> str | None:
        """The session id a cookie holds, if its signature is ours and it is not too old."""
        if not cookie:
            return None
        try:
            value = self.cookies.loads(cookie, max_age=int(self.lifetime.total_seconds()))
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def csrf_token(self, session_id: str) -> str:
        """The forms' token of a session: a keyed hash of its id, so it needs no storage
        and dies with the session."""
        return hmac.new(self.key, f"csrf|{session_id}".encode(), hashlib.sha256).hexdigest()

    def sign_in_pair(self, nonce: str) -> str:
        return self.sign_in.dumps(nonce)

    def sign_in_nonce(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            nonce = self.sign_in.loads(value, max_age=SIGN_IN_SECONDS)
        except BadSignature:
            return None
        return nonce if isinstance(nonce, str) else None


_opening = threading.Lock()


def _resources(request: Request) -> tuple[PageSessions, SessionKeys]:
    """The sessions table and the keys, opened on the first page request of the process
    (the key file was already checked at start, by the ledger's own opening)."""
    state = request.app.state
    with _opening:
        if getattr(state, "page_sessions", None) is None:
            settings: Settings = state.settings
            database = Database.from_url(settings.database_url)
            keys = open_keys(
                key_file=os.environ.get(KEY_FILE_SETTING),
                database_kind=database.kind,
                database_path=database.path,
            )
            tokens: TokenStore = state.tokens
            state.session_keys = SessionKeys(
                keys["session_key"], timedelta(hours=settings.session_hours)
            )
            state.page_sessions = PageSessions(tokens.sql)
    return state.page_sessions, state.session_keys


async def resources(request: Request) -> tuple[PageSessions, SessionKeys]:
    state = request.app.state
    if getattr(state, "page_sessions", None) is not None:
        return state.page_sessions, state.session_keys
    return await run_in_threadpool(_resources, request)


async def signed_in(request: Request) -> Browser:
    """The browser's live session; SignInNeeded without one."""
    sessions, keys = await resources(request)
    session_id = keys.session_id(request.cookies.get(COOKIE))
    if session_id is None:
        raise SignInNeeded
    session = await run_in_threadpool(sessions.find, session_id)
    if session is None:
        raise SignInNeeded
    return Browser(session_id, session, keys.csrf_token(session_id))


SignedIn = Annotated[Browser, Depends(signed_in)]


def admin_only(browser: Browser, what: str) -> None:
    """PageForbidden unless the session's token is an admin's (`what`: the pages')."""
    if browser.token.role != "admin":
        raise PageForbidden(f"{what} are for admin sessions; this one is {browser.token.role}")


async def checked_form(
    browser: SignedIn, csrf_token: Annotated[str, Form(max_length=128)] = ""
) -> Browser:
    """A form's post, with its session's CSRF token; CsrfRefused otherwise."""
    if not hmac.compare_digest(csrf_token.encode(), browser.csrf_token.encode()):
        raise CsrfRefused
    return browser


PostedBy = Annotated[Browser, Depends(checked_form)]


def set_session_cookie(
    request: Request, response: Response, keys: SessionKeys, session_id: str
) -> None:
    response.set_cookie(
        COOKIE,
        keys.cookie_value(session_id),
        max_age=int(keys.lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # plain HTTP only on loopback (README)
        path="/",
    )


def forget_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
