"""The conflicts report (`lesson-ledger report conflicts`) for a period, each row linking
to its lessons."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.dependencies import Ledger, ReadModel
from adapters.http.pages.rendering import render
from adapters.http.pages.session import SignedIn
from adapters.storage.refused_requests import SqlInvalidRequestLog
from domain import InvalidLessonRequest
from projections.conflict_report import CAUSES, ONE_BATCH, conflict_report

router = APIRouter(include_in_schema=False)
DAY = timedelta(days=1)


@router.get("/conflicts")
def conflicts(
    request: Request,
    browser: SignedIn,
    ledger: Ledger,
    read_model: ReadModel,
    since: str | None = None,
    until: str | None = None,
    provider_id: str | None = None,
    school_id: str | None = None,
) -> Response:
    """Why requests were turned away in a period (dates inclusive, UTC), and by whom."""
    errors: dict[str, str] = {}
    start = _day(errors, "since", since)
    end = _day(errors, "until", until)
    if start is not None and end is not None and end < start:
        errors["until"] = f"{end} is before since ({start})"
    token = browser.token
    provider = provider_id.strip() if provider_id and provider_id.strip() else None
    if token.role == "provider":
        if provider is not None and provider.lower() != token.provider_id:
            errors["provider_id"] = "a provider's session shows its own provider's lessons only"
        provider = token.provider_id
    school = school_id.strip() if school_id and school_id.strip() else None
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Conflicts",
        "errors": errors,
        "given": {
            "since": since or "",
            "until": until or "",
            "provider_id": provider_id or "",
            "school_id": school_id or "",
        },
        "causes": CAUSES,
        "one_batch": ONE_BATCH,
        "report": None,
    }
    if errors:
        return render(request, "conflicts.html", context, 400)
    refused = ledger.invalid_requests
    since_at = datetime.combine(start, time.min, UTC) if start else None
    # Up to the end of its day; to the calendar's last day: no end (the next does not exist).
    until_at = None if end in (None, date.max) else datetime.combine(end + DAY, time.min, UTC)
    try:
        report = conflict_report(
            read_model.log,
            refused.read(since_at, until_at) if isinstance(refused, SqlInvalidRequestLog) else [],
            since=since_at,
            until=until_at,
            provider_id=provider,
            school_id=school,
        )
    except InvalidLessonRequest as invalid:
        context["errors"] = {error["field"]: error["message"] for error in invalid.errors}
        return render(request, "conflicts.html", context, 400)
    context["report"] = report
    return render(request, "conflicts.html", context)


def _day(errors: dict[str, str], name: str, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors[name] = "must be a date, YYYY-MM-DD"
        return None
