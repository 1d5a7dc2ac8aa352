"""The work both sides do: lesson requests with distinct keys, as a calendar week view
sends them, and the row the old back end inserted for each.

Keys are deterministic, so a worker process can make its share from a few numbers, and
the ledger and the baseline can be given exactly the same requests.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

FIRST_MONDAY = date(2025, 9, 1)
DAYS_PER_WEEK = 5
SLOTS_PER_DAY = 8
LESSONS_PER_WEEK = DAYS_PER_WEEK * SLOTS_PER_DAY
SCHOOLS = 50
DETAILS: dict[str, Any] = {
    "students": [{"id": "st-1", "grade": 3}, {"id": "st-2", "grade": 4, "readingLevel": "M"}],
    "subject": "Reading",
    "subjectType": "ela",
    "teacherRole": "resource",
    "topic": "Main idea and details",
    "duration": 30,
}
DETAILS_JSON = json.dumps(DETAILS)
_BENCH_NAMESPACE = uuid.UUID("4b0f7f3e-6c1d-5a53-9d0e-2f6d8c1b7a10")


@dataclass(frozen=True)
class Request:
    """One lesson request: the key's parts, the request id, and who sent it."""

    provider_id: str
    school_id: str
    lesson_date: str
    time_slot: str
    request_id: str
    students: tuple[str, ...] = ()
    """Ids of the request's students in place of DETAILS' two, when given."""

    @property
    def lesson_id(self) -> uuid.UUID:
        """The id the ledger gives the lesson of this request's key."""
        from domain import lesson_id_for

        return lesson_id_for(self.provider_id, self.school_id, self.lesson_date, self.time_slot)

    def as_ledger_item(self, actor: str = "bench") -> dict[str, Any]:
        """Keyword arguments of `ledger.request_lesson`, or an item of `request_batch`."""
        details = DETAILS
        if self.students:
            students = [{"id": student, "grade": 3} for student in self.students]
            details = {**DETAILS, "students": students}
        return {
            "provider_id": self.provider_id,
            "school_id": self.school_id,
            "lesson_date": self.lesson_date,
            "time_slot": self.time_slot,
            "request_id": self.request_id,
            "actor": actor,
            "details": details,
        }

    def as_row(self) -> tuple[str, str, str, str, str]:
        """The old table's values: the key and what the request asked for."""
        return (
            self.provider_id,
            self.school_id,
            self.lesson_date,
            self.time_slot,
            DETAILS_JSON,
        )


def provider_id(run: str, provider: int) -> str:
    """A provider's id, stable within one run's `run` label."""
    return str(uuid.uuid5(_BENCH_NAMESPACE, f"{run}/{provider}"))


def slot_of(index: int) -> tuple[str, str]:
    """The index-th lesson of a provider's calendar: weekdays from FIRST_MONDAY, eight
    half-hour slots a day from 08:00."""
    week, in_week = divmod(index, LESSONS_PER_WEEK)
    day, slot = divmod(in_week, SLOTS_PER_DAY)
    lesson_date = FIRST_MONDAY + timedelta(weeks=week, days=day)
    start = 8 * 60 + 30 * slot
    end = start + 30
    slot_text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    return lesson_date.isoformat(), slot_text


def requests(run: str, first: int, count: int, per_provider: int = 400) -> list[Request]:
    """Requests number `first` to `first + count - 1` of a run: `per_provider` lessons per
    provider, then the next provider."""
    out = []
    for number in range(first, first + count):
        provider, index = divmod(number, per_provider)
        lesson_date, time_slot = slot_of(index)
        out.append(
            Request(
                provider_id(run, provider),
                f"school-{provider % SCHOOLS}",
                lesson_date,
                time_slot,
                f"{run}-{number}",
            )
        )
    return out


def week_of(index: int) -> tuple[str, str]:
    """The Monday and Sunday of a provider's index-th week."""
    monday = FIRST_MONDAY + timedelta(weeks=index)
    return monday.isoformat(), (monday + timedelta(days=6)).isoformat()
