"""The lesson key: (provider, school, date, time slot), canonicalised, and its uuid5 id.

Every process that canonicalises the same key computes the same lesson id, so the
event store's unique (originator_id, version) decides every race for a slot.
This module imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Literal, TypeVar
from uuid import UUID

from domain.cached import cached_attribute
from domain.errors import FieldError, InvalidLessonRequest, parse_field

LEDGER_NAMESPACE = UUID("dfc08d2d-5855-5109-b8db-db0e89a81ab9")
"""Namespace of lesson ids: uuid5(NAMESPACE_URL, "urn:lesson-ledger:lesson-slot")."""
_NAMESPACE_BYTES = LEDGER_NAMESPACE.bytes

LessonKind = Literal["scheduled", "on_demand"]
ON_DEMAND_PREFIX = "on-demand-"
LEGACY_FALLBACK_SLOT = "structured"

# What each part accepts, as regular expressions the code and the API's documentation
# share (domain/commands.py); the parts are trimmed of surrounding white space first.
PROVIDER_ID_PATTERN = (
    r"(?:urn:uuid:)?\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}\}?"
)
"""A UUID in any standard text form: hyphenated or not, in braces, or as a URN."""
SCHOOL_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
LESSON_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"
TIME_SLOT_PATTERN = r"\s*(\d{1,2}):(\d{2})\s*[-\u2013]\s*(\d{1,2}):(\d{2})\s*"
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:@/+=~-]{1,128}"
_SCHOOL_ID = re.compile(SCHOOL_ID_PATTERN)
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ISO_DATE = re.compile(LESSON_DATE_PATTERN)
_PROVIDER_ID = re.compile(PROVIDER_ID_PATTERN)
_TIME_SLOT = re.compile(TIME_SLOT_PATTERN)
_START_ONLY = re.compile(r"\s*(\d{1,2}):(\d{2})\s*")
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
# Strings that front ends send when a variable was never set: they mean "missing".
_UNSET_WORDS = {"null", "none", "undefined", "nil"}
_MINUTES_PER_DAY = 24 * 60
T = TypeVar("T")


@dataclass(frozen=True)
class LessonKey:
    """The canonical key of one lesson slot."""

    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str

    @property
    def kind(self) -> LessonKind:
        return "on_demand" if self.time_slot.startswith(ON_DEMAND_PREFIX) else "scheduled"

    @cached_attribute
    def lesson_id(self) -> UUID:
        # uuid5(LEDGER_NAMESPACE, self.text), as uuid.uuid5 computes it, without its
        # import and namespace encoding on every call (a third of its time). Cached: a
        # batch asks for it several times per item.
        digest = hashlib.sha1(_NAMESPACE_BYTES + self.text.encode()).digest()
        return UUID(bytes=digest[:16], version=5)

    @property
    def text(self) -> str:
        """The published id recipe's input: "provider|school|date|slot"."""
        return (
            f"{self.provider_id}|{self.school_id}|{self.lesson_date.isoformat()}|{self.time_slot}"
        )


def lesson_id_for(
    provider_id: object, school_id: object, lesson_date: object, time_slot: object
) -> UUID:
    """The lesson id of a key, in any accepted spelling (an on-demand slot, and an imported
    legacy start-only slot such as `08:00`, included)."""
    slot = time_slot.strip() if isinstance(time_slot, str) else time_slot
    if isinstance(slot, str) and _START_ONLY.fullmatch(slot):  # an imported legacy lesson
        return parse_key(provider_id, school_id, lesson_date, slot, slot_rule=_start_time).lesson_id
    if isinstance(slot, str) and slot.startswith(ON_DEMAND_PREFIX):
        return parse_key(
            provider_id,
            school_id,
            lesson_date,
            None,
            kind="on_demand",
            request_id=slot[len(ON_DEMAND_PREFIX) :],
        ).lesson_id
    return parse_key(provider_id, school_id, lesson_date, time_slot).lesson_id


def parse_key(
    provider_id: object,
    school_id: object,
    lesson_date: object,
    time_slot: object,
    *,
    kind: object = "scheduled",
    request_id: object = None,
    slot_rule: Callable[[object], str] | None = None,
) -> LessonKey:
    """Canonicalise every part of a key, raising one error that names every bad field."""
    if kind == "scheduled" and slot_rule is None:
        # The usual request, its parts in their usual spellings: parsed once per process.
        # (The parts repeat from request to request: a provider's schools, dates, slots.)
        try:
            return LessonKey(
                _known_provider(provider_id),
                _known_school(school_id),
                _known_date(lesson_date),
                _known_slot(time_slot),
            )
        except (ValueError, TypeError):
            pass  # one part is bad, or not a string: name every bad part below
    errors: list[FieldError] = []
    provider = parse_field(errors, "provider_id", canonical_provider_id, provider_id)
    school = parse_field(errors, "school_id", canonical_school_id, school_id)
    day = parse_field(errors, "lesson_date", canonical_lesson_date, lesson_date)
    slot: str | None
    if kind == "scheduled":
        slot = parse_field(errors, "time_slot", slot_rule or canonical_time_slot, time_slot)
    elif kind == "on_demand":
        parse_field(errors, "time_slot", _no_time_slot, time_slot)
        rid = parse_field(errors, "request_id", canonical_request_id, request_id)
        slot = f"{ON_DEMAND_PREFIX}{rid}"
    else:
        errors.append(
            FieldError(field="kind", message=f"must be 'scheduled' or 'on_demand', not {kind!r}")
        )
        slot = None
    if errors:
        raise InvalidLessonRequest(errors)
    assert provider and school and day and slot
    return LessonKey(provider, school, day, slot)


def canonical_provider_id(value: object) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("is missing")
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a UUID string, not {type(value).__name__}")
    text = value.strip()
    if not _PROVIDER_ID.fullmatch(text):
        raise ValueError(f"is not a UUID: {_shorten(value)!r}")
    return str(UUID(text))


def canonical_school_id(value: object) -> str:
    missing = "is missing: a lesson without a school cannot be checked for duplicates"
    if value is None:
        raise ValueError(missing)
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(missing)
    if text.lower() in _UNSET_WORDS:
        raise ValueError(f"{missing} (got the placeholder {text!r})")
    if not _SCHOOL_ID.fullmatch(text):
        raise ValueError(f"must be 1-64 characters of A-Z a-z 0-9 . _ : - (got {_shorten(text)!r})")
    if _CANONICAL_UUID.fullmatch(text):
        return text.lower()
    return text


def canonical_lesson_date(value: object) -> date:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("is missing")
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a YYYY-MM-DD string, not {type(value).__name__}")
    text = value.strip()
    if not _ISO_DATE.fullmatch(text):
        raise ValueError(f"must be a date as YYYY-MM-DD (got {_shorten(text)!r})")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"is not a real calendar date: {text!r}") from None


def canonical_time_slot(value: object) -> str:
    missing = "time slot missing: a scheduled lesson needs a range such as 08:30-09:00"
    on_demand_hint = "; for a lesson without a slot send kind: on_demand"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(missing + on_demand_hint)
    if not isinstance(value, str):
        raise ValueError(f"must be text such as 08:30-09:00, not {type(value).__name__}")
    text = value.strip()
    if text.lower() == LEGACY_FALLBACK_SLOT:
        raise ValueError(f"{missing} ('structured' is the old fallback){on_demand_hint}")
    if text.lower().startswith(ON_DEMAND_PREFIX):
        raise ValueError(f"{text!r} is an on-demand slot{on_demand_hint}")
    match = _TIME_SLOT.fullmatch(text)
    if not match:
        raise ValueError(
            f"must be a range H:MM-H:MM or HH:MM-HH:MM, 24-hour (got {_shorten(text)!r})"
        )
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise ValueError(f"is out of range: {text!r} (hours 00-23, minutes 00-59, end up to 24:00)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if end <= start or end > _MINUTES_PER_DAY:
        raise ValueError(f"must end after it starts (got {text!r})")
    return f"{start_h:02d}:{start_m:02d}-{end_h:02d}:{end_m:02d}"


def canonical_request_id(value: object) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("is missing")
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {type(value).__name__}")
    text = value.strip()
    if not _REQUEST_ID.fullmatch(text):
        raise ValueError(
            f"must be 1-128 characters of A-Z a-z 0-9 . _ : @ / + = ~ - (got {_shorten(text)!r})"
        )
    return text


def _only_text(parse: Callable[[object], T]) -> Callable[[object], T]:
    """`parse`, remembered for the last few thousand strings it accepted (any other
    value raises TypeError, for the caller to parse it the long way)."""
    remembered = lru_cache(maxsize=4096)(parse)

    def parse_text(value: object) -> T:
        if type(value) is not str:
            raise TypeError("not a string")
        return remembered(value)

    return parse_text


_known_provider = _only_text(canonical_provider_id)
_known_school = _only_text(canonical_school_id)
_known_date = _only_text(canonical_lesson_date)
_known_slot = _only_text(canonical_time_slot)


def _no_time_slot(value: object) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if isinstance(value, str) and value.strip().lower() == LEGACY_FALLBACK_SLOT:
        return ""  # the legacy on-demand sentinel says the same as no slot
    raise ValueError("an on-demand lesson has no time slot: leave it out, or send kind: scheduled")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_legacy_key(
    provider_id: object, school_id: object, lesson_date: object, time_slot: object, legacy_id: str
) -> tuple[LessonKey, list[str]]:
    """The key of a row of the old table, and its flags for review.

    `structured` and `on-demand-*` rows become on-demand lessons (an `on-demand-*` slot
    is kept, `structured` becomes `on-demand-legacy-<id>`); a start time alone
    (`08:00`) is kept as the slot and flagged; a missing school is refused as ever.
    """
    text = time_slot.strip() if isinstance(time_slot, str) else time_slot
    if text is None or text == "" or str(text).lower() == LEGACY_FALLBACK_SLOT:
        key = parse_key(
            provider_id,
            school_id,
            lesson_date,
            None,
            kind="on_demand",
            request_id=f"legacy-{legacy_id}",
        )
        return key, ["structured_slot"]
    if isinstance(text, str) and text.lower().startswith(ON_DEMAND_PREFIX):
        key = parse_key(
            provider_id,
            school_id,
            lesson_date,
            None,
            kind="on_demand",
            request_id=text[len(ON_DEMAND_PREFIX) :],
        )
        return key, ["on_demand_slot"]
    if isinstance(text, str) and _START_ONLY.fullmatch(text):
        key = parse_key(provider_id, school_id, lesson_date, text, slot_rule=_start_time)
        return key, ["start_only_slot"]
    return parse_key(provider_id, school_id, lesson_date, time_slot), []


def _start_time(value: object) -> str:
    """A legacy start time alone (`8:00`), as `HH:MM`."""
    match = _START_ONLY.fullmatch(str(value))
    assert match is not None
    hours, minutes = (int(part) for part in match.groups())
    if hours > 23 or minutes > 59:
        raise ValueError(f"is out of range: {value!r}")
    return f"{hours:02d}:{minutes:02d}"
