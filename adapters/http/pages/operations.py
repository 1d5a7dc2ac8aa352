"""Operations (admin): each projection's position, head and lag; a rebuild or a verify
started from the page, whose progress the page follows."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from adapters.http.dependencies import ReadModel
from adapters.http.pages.rendering import render
from adapters.http.pages.session import PostedBy, SignedIn, admin_only
from projections.read_model import LessonsReadModel
from projections.verify import VerifyReport

router = APIRouter(include_in_schema=False)


@dataclass
class VerifyRun:
    """A verify started from the page (this process's)."""

    started_at: datetime
    finished_at: datetime | None = None
    report: VerifyReport | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@router.get("/operations")
def operations_page(request: Request, browser: SignedIn, read_model: ReadModel) -> Response:
    admin_only(browser, "operations")
    statuses = read_model.status()
    verify_run: VerifyRun | None = getattr(request.app.state, "verify_run", None)
    rebuilding = any(s.rebuild is not None and s.rebuild.running for s in statuses)
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Operations",
        "statuses": statuses,
        "verify": verify_run,
        "busy": rebuilding or (verify_run is not None and not verify_run.done.is_set()),
        "now": datetime.now(UTC),
    }
    return render(request, "operations.html", context)


@router.post("/operations/rebuild")
def start_rebuild(request: Request, browser: PostedBy, read_model: ReadModel) -> Response:
    """Rebuild the lessons table in the background (as POST /v1/projections/lessons/rebuild)."""
    admin_only(browser, "operations")
    running: threading.Thread | None = getattr(request.app.state, "rebuild_thread", None)
    if running is None or not running.is_alive():
        thread = threading.Thread(target=read_model.rebuild, name="rebuild-lessons", daemon=True)
        request.app.state.rebuild_thread = thread
        thread.start()
    return RedirectResponse("/operations", status_code=303)


@router.post("/operations/verify")
def start_verify(request: Request, browser: PostedBy, read_model: ReadModel) -> Response:
    """Fold the events afresh and compare every row, in the background."""
    admin_only(browser, "operations")
    current: VerifyRun | None = getattr(request.app.state, "verify_run", None)
    if current is None or current.done.is_set():
        run = request.app.state.verify_run = VerifyRun(datetime.now(UTC))
        threading.Thread(target=_verify, args=(run, read_model), daemon=True).start()
    return RedirectResponse("/operations", status_code=303)


def _verify(run: VerifyRun, read_model: LessonsReadModel) -> None:
    try:
        run.report = read_model.verify()
    except Exception as error:  # shown on the page; the process goes on
        run.error = f"{type(error).__name__}: {error}"
    finally:
        run.finished_at = datetime.now(UTC)
        run.done.set()
