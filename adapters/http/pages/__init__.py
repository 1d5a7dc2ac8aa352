"""The audit pages, served by the API's own server and rendered there: sign in with a
token, a provider's week, a lesson and its whole history, the conflicts report, the
tamper-evident log's proof, and operations and erasures (admin). Templates and static
files sit beside this package; nothing comes from another site, so the pages work
offline. `install(app)` adds them to the app."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from adapters.http.pages import (
    calendar,
    conflicts,
    erasures,
    lesson,
    live,
    operations,
    proof,
    signin,
)
from adapters.http.pages.rendering import STATIC, render
from adapters.http.pages.session import CsrfRefused, PageForbidden, SignInNeeded


def install(app: FastAPI) -> None:
    """The pages' routes, static files and error pages."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (signin, calendar, lesson, conflicts, proof, operations, erasures, live):
        app.include_router(module.router)

    async def on_sign_in_needed(request: Request, error: Exception) -> Response:
        if request.url.path.startswith("/live/") or request.method != "GET":
            return PlainTextResponse("sign in first", status_code=401)
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/sign-in?next={quote(wanted, safe='')}", status_code=303)

    async def on_forbidden(request: Request, error: Exception) -> Response:
        assert isinstance(error, PageForbidden)
        context = {"title": "Forbidden", "message": error.detail}
        return render(request, "error.html", context, status_code=403)

    async def on_csrf(request: Request, error: Exception) -> Response:
        context = {
            "title": "Form refused",
            "message": "The form was sent without its session's CSRF token, so nothing was "
            "done. Open the page again and resend it from there.",
        }
        return render(request, "error.html", context, status_code=403)

    app.add_exception_handler(SignInNeeded, on_sign_in_needed)
    app.add_exception_handler(PageForbidden, on_forbidden)
    app.add_exception_handler(CsrfRefused, on_csrf)
