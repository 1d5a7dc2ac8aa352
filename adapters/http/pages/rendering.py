"""Rendering the pages: Jinja2 templates (autoescaped: every value from a request is shown
as text), the headers every page carries, and the labels statuses are shown with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from adapters.counts import counted

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC = Path(__file__).parent / "static"

STATUS_LABELS = {
    "new": ("○", "new"),
    "requested": ("…", "requested"),
    "generated": ("✓", "generated"),
    "failed": ("✕", "failed"),
    "cancelled": ("⊘", "cancelled"),
}
"""Each status as a symbol and a word: colour is never the only signal."""

SECURITY_HEADERS = {
    # Everything from the ledger itself: no CDN, no inline script, works offline.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | str | None) -> str:
    """A time as auditors read it: UTC, to the millisecond."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["counted"] = counted
TEMPLATES.env.globals["STATUS_LABELS"] = STATUS_LABELS


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page; `context` may hold `browser` (the signed-in session) for the header."""
    response = TEMPLATES.TemplateResponse(
        request, name, {"browser": None, **context}, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response
