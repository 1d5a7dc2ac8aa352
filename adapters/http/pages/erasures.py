"""Erasures (admin): every student erasure and retention run as recorded (when, who,
why, how many keys and lessons), newest first, which of them the latest signed checkpoint
covers, and whether this server runs retention: `lesson-ledger students erasures` as a
page, for an auditor asked to show that an erasure was carried out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.pages.rendering import render
from adapters.http.pages.session import SignedIn, admin_only
from adapters.keys.erasure import Erasures
from projections.merkle.checkpoint import erasures_covered

router = APIRouter(include_in_schema=False)


@router.get("/erasures")
def erasures_page(request: Request, browser: SignedIn) -> Response:
    admin_only(browser, "erasures")
    erasures: Erasures = request.app.state.erasures
    latest = request.app.state.audit.latest_checkpoint()
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Erasures",
        "erasures": erasures.records()[::-1],
        "checkpoint": latest,
        "covered": erasures_covered(latest),
        "retention_days": request.app.state.settings.retention_days,
    }
    return render(request, "erasures.html", context)
