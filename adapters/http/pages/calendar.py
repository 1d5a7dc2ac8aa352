"""The week calendar: a provider's lessons at a school (or all its schools), each slot
with its status, attempt, and a mark where requests were turned away."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.dependencies import Ledger, ReadModel
from adapters.http.pages.rendering import render
from adapters.http.pages.session import SignedIn
from domain import LessonLedger, LessonSlot
from domain.keys import canonical_provider_id, canonical_school_id
from projections.lessons import LessonRow
from projections.read_model import LessonsReadModel

router = APIRouter(include_in_schema=False)
MOST = 2000
"""Lessons one week shows at most (a provider's week holds tens)."""
FIRST_DAY = date.min + timedelta(days=7)
LAST_DAY = date.max - timedelta(days=13)
"""The dates whose week has a week before and after it to link to."""


@dataclass(frozen=True)
class Slot:
    """A lesson on the calendar, and how many requests for it were turned away."""

    row: LessonRow
    turned_away: int


@router.get("/calendar")
def calendar(
    request: Request,
    browser: SignedIn,
    read_model: ReadModel,
    ledger: Ledger,
    provider_id: str | None = None,
    school_id: str | None = None,
    week: str | None = None,
) -> Response:
    """A week of lessons, Monday to Sunday."""
    errors: dict[str, str] = {}
    token = browser.token
    provider = _field(errors, "provider_id", canonical_provider_id, provider_id or None)
    school = _field(errors, "school_id", canonical_school_id, school_id or None)
    day = _field(errors, "week", _week, week or None) or date.today()
    if token.role == "provider":
        if provider is not None and provider != token.provider_id:
            errors["provider_id"] = "a provider's session shows its own provider's lessons only"
        provider = token.provider_id
    monday = day - timedelta(days=day.weekday())
    days = [monday + timedelta(days=n) for n in range(7)]
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Week calendar",
        "provider_id": provider,
        "school_id": school,
        "given": {"provider_id": provider_id or "", "school_id": school_id or ""},
        "errors": errors,
        "days": days,
        "monday": monday,
        "previous": monday - timedelta(days=7),
        "next": monday + timedelta(days=7),
        "today": date.today(),
    }
    if errors or provider is None:
        return render(request, "calendar.html", context, 400 if errors else 200)
    position = read_model.position()  # before the rows: a change after it is streamed
    slots = week_of(read_model, ledger, provider, school, days[0], days[-1])
    times = sorted({slot.row.time_slot for slot in slots}, key=_slot_order)
    grid: dict[tuple[str, date], list[Slot]] = defaultdict(list)
    for slot in slots:
        grid[(slot.row.time_slot, slot.row.lesson_date)].append(slot)
    context.update(times=times, grid=grid, position=position, count=len(slots))
    return render(request, "calendar.html", context)


def week_of(
    read_model: LessonsReadModel,
    ledger: LessonLedger,
    provider_id: str,
    school_id: str | None,
    first: date,
    last: date,
) -> list[Slot]:
    """The week's rows and, for each, the requests its history turned away."""
    rows: list[LessonRow] = []
    cursor = None
    while len(rows) < MOST:
        page = read_model.list_lessons(
            provider_id=provider_id,
            school_id=school_id,
            date_from=first,
            date_to=last,
            limit=500,
            cursor=cursor,
        )
        rows += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return [Slot(row, turned_away(ledger, row.lesson_id)) for row in rows]


def turned_away(ledger: LessonLedger, lesson_id: UUID) -> int:
    return sum(isinstance(e, LessonSlot.RequestRejected) for e in ledger.slots.events(lesson_id))


def _slot_order(time_slot: str) -> tuple[int, str]:
    # Time slots sort as text (HH:MM-HH:MM); on-demand lessons' places come after them.
    return (1 if time_slot.startswith("on-demand-") else 0, time_slot)


def _week(text: str) -> date:
    """A date of the week to show; a date too near the calendar's ends is refused (its
    neighbouring weeks' dates do not exist: it was a 500)."""
    day = date.fromisoformat(text)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"must be a date from {FIRST_DAY} to {LAST_DAY}, not {day}")
    return day


def _field(errors: dict[str, str], name: str, parse: Any, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse(value.strip())
    except ValueError as invalid:
        errors[name] = str(invalid)
        return None
