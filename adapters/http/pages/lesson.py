"""A lesson: its state (as of any version or time), the generated lesson rendered for
reading, and its whole history as a timeline, turned-away requests included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.commands import owned
from adapters.http.dependencies import Ledger, ReadModel
from adapters.http.pages.rendering import render
from adapters.http.pages.session import PageForbidden, SignedIn
from adapters.http.problems import ApiProblem
from domain import LessonNotFound

router = APIRouter(include_in_schema=False)

SHOWN_APART = {"content", "content_erased", "students", "details"}
"""Fields a timeline entry shows in their own way (content above; students as a count)."""


@router.get("/lessons/{lesson_id}")
def lesson_page(
    request: Request,
    lesson_id: str,
    browser: SignedIn,
    ledger: Ledger,
    read_model: ReadModel,
    as_of_version: str | None = None,
    as_of: str | None = None,
) -> Response:
    """The lesson now, or as it was at a version or a time (UTC)."""
    context: dict[str, Any] = {"browser": browser, "title": "Lesson", "errors": {}}
    try:
        wanted = UUID(lesson_id)
    except ValueError:
        context["errors"]["lesson_id"] = "is not a lesson id (a UUID)"
        return render(request, "lesson.html", context, 404)
    try:
        owned(ledger, wanted, browser.token)  # the API's rule: another's lesson is a 403
    except ApiProblem as refused:
        raise PageForbidden(refused.detail) from None
    except LessonNotFound:
        context["errors"]["lesson_id"] = f"no lesson has the id {wanted}"
        return render(request, "lesson.html", context, 404)
    position = read_model.position()  # before reading: a later change is streamed
    whole = ledger.history(wanted)
    version, moment = _travel(context["errors"], as_of_version, as_of)
    shown = whole
    if version is not None or moment is not None:
        shown = ledger.history(wanted, as_of_version=version, as_of=moment)
    versions = [entry.version for entry in whole.entries]
    current = shown.state.version if shown.state else 0
    context.update(
        title=f"Lesson {whole.state.lesson_date} {whole.state.time_slot}" if whole.state else "",
        lesson_id=wanted,
        key=whole.state,
        state=shown.state,
        students=len(shown.state.students or ()) if shown.state else 0,
        students_erased=shown.state.students_erased if shown.state else 0,
        entries=whole.entries,
        travelling=version is not None or moment is not None,
        version=current,
        previous=max((v for v in versions if v < current), default=None),
        later=min((v for v in versions if v > current), default=None),
        latest=versions[-1] if versions else 0,
        as_of=as_of or "",
        position=position,
        shown_apart=SHOWN_APART,
    )
    status = 400 if context["errors"] else 200
    return render(request, "lesson.html", context, status)


def _travel(
    errors: dict[str, str], as_of_version: str | None, as_of: str | None
) -> tuple[int | None, datetime | None]:
    version = moment = None
    if as_of_version:
        if as_of_version.isascii() and as_of_version.isdigit() and int(as_of_version) >= 1:
            version = int(as_of_version)
        else:
            errors["as_of_version"] = "must be a version number, 1 or more"
    if as_of:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            errors["as_of"] = "must be a date and time, e.g. 2025-09-05T08:30"
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # the form's local time is read as UTC
    return version, moment
