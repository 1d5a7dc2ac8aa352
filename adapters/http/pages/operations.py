"""Operations (admin): each projection's position, head and lag; a rebuild or a verify
started from the page, whose progress the page follows."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from adapters.http import rebuilding
from adapters.http.dependencies import ReadModel
from adapters.http.pages.background import start_run
from adapters.http.pages.rendering import render
from adapters.http.pages.session import PostedBy, SignedIn, admin_only
from adapters.postgres.rights import rebuild_refusal
from adapters.storage.page_runs import PageRuns
from projections.verify import VerifyReport

router = APIRouter(include_in_schema=False)
VERIFY_RUN = "verify-lessons"


@router.get("/operations")
def operations_page(request: Request, browser: SignedIn, read_model: ReadModel) -> Response:
    admin_only(browser, "operations")
    statuses = read_model.status()
    runs: PageRuns = request.app.state.page_runs
    verify_run = runs.latest(VERIFY_RUN)
    rebuilding = any(s.rebuild is not None and s.rebuild.running for s in statuses)
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Operations",
        "statuses": statuses,
        "verify": verify_run,
        "busy": rebuilding or (verify_run is not None and verify_run.running),
        "rebuild_refusal": rebuild_refusal(request.app.state.database),
        "now": datetime.now(UTC),
    }
    return render(request, "operations.html", context)


@router.post("/operations/rebuild")
def start_rebuild(request: Request, browser: PostedBy, read_model: ReadModel) -> Response:
    """Rebuild the lessons table in the background (as POST /v1/projections/lessons/rebuild)."""
    admin_only(browser, "operations")
    state = request.app.state
    with suppress(rebuilding.RebuildRefused):  # the page says why, in place of the button
        rebuilding.start_rebuild(state, state.database, read_model)
    return RedirectResponse("/operations", status_code=303)


@router.post("/operations/verify")
def start_verify(request: Request, browser: PostedBy, read_model: ReadModel) -> Response:
    """Fold the events afresh and compare every row, in the background."""
    admin_only(browser, "operations")
    start_run(
        request.app.state.page_runs,
        VERIFY_RUN,
        lambda count: read_model.verify(),
        VerifyReport.as_json,
    )
    return RedirectResponse("/operations", status_code=303)
