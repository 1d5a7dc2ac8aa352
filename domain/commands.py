"""Commands as the ledger accepts them: validated in full before anything is written.

Requests arrive in snake_case or in the calendar front end's camelCase. Validation
collects every bad field, key and details together, into one InvalidLessonRequest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StringConstraints,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from domain.errors import FieldError, InvalidLessonRequest, parse_field
from domain.fingerprint import Fingerprint
from domain.keys import (
    LESSON_DATE_PATTERN,
    PROVIDER_ID_PATTERN,
    REQUEST_ID_PATTERN,
    SCHOOL_ID_PATTERN,
    TIME_SLOT_PATTERN,
    LessonKey,
    canonical_request_id,
    parse_key,
    parse_legacy_key,
)

SOURCES: tuple[str, ...] = ("api", "api-jwt", "cli", "import", "worker")
"""Where a command came from: `api` with one of the ledger's own tokens, `api-jwt` with a
JWT of the product's sign-in (adapters/auth/), the command line, the legacy import, the
generation worker."""
MAX_ACTOR_LENGTH = 128
MAX_SPELLING = 64
MAX_DETAILS_BYTES = 128 * 1024


def _trimmed(text: str) -> str:
    """Text without surrounding white space; blank text is missing."""
    trimmed = text.strip()
    if not trimmed:
        raise ValueError("is blank")
    return trimmed


# The length is checked as sent, the white space trimmed after: what the documented
# limits (maxLength) refuse, the ledger refuses too.
TEXT_LENGTH = 500
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=TEXT_LENGTH), AfterValidator(_trimmed)
]
LongText = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_trimmed)
]


class _Model(BaseModel):
    # Strict: a grade of "3" or true is not a grade; JSON's own types only.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class Student(_Model):
    """One student, by id only: names never enter the ledger."""

    id: Text
    grade: int = Field(
        ge=-2,
        le=12,
        description="-2 pre-kindergarten, -1 transitional kindergarten, 0 kindergarten, "
        "1-12 grades 1 to 12",
    )
    reading_level: Text | None = None
    iep_goals: list[LongText] | None = Field(default=None, max_length=50)
    accommodations: list[LongText] | None = Field(default=None, max_length=50)


class LessonDetails(_Model):
    """What the generator needs to write the lesson."""

    students: list[Student] = Field(min_length=1, max_length=30)
    subject: Text
    subject_type: Literal["ela", "math"] | None = None
    teacher_role: Literal["resource", "ot", "speech", "counseling"] | None = None
    topic: Text | None = None
    duration: int = Field(default=30, ge=5, le=120)
    focus_skills: list[Text] = Field(default_factory=list, max_length=30)


# A lesson request's fields, defined once: `LessonRequestFields` documents them (types,
# limits, descriptions) for the HTTP API's OpenAPI document and the command line's
# batch files; `validate_request` below checks them and names every bad field at once,
# in the ledger's words. The model does not validate (SkipValidation): a request with
# several bad fields must be answered with all of them, not with the first pydantic met.
ProviderIdText = Annotated[
    str,
    StringConstraints(pattern=rf"^\s*{PROVIDER_ID_PATTERN}\s*$"),
    Field(
        description="The provider: a UUID in any standard text form. "
        "Defaults to a provider token's own."
    ),
]
SchoolIdText = Annotated[
    str,
    StringConstraints(pattern=rf"^\s*{SCHOOL_ID_PATTERN}\s*$"),
    Field(description="The school: 1-64 characters of A-Z a-z 0-9 . _ : -; required."),
]
LessonDateText = Annotated[
    str,
    StringConstraints(pattern=rf"^\s*{LESSON_DATE_PATTERN}\s*$"),
    Field(description="YYYY-MM-DD, a real calendar date; required."),
]
TimeSlotText = Annotated[
    str,
    StringConstraints(pattern=f"^{TIME_SLOT_PATTERN}$"),
    Field(
        description="H:MM-H:MM or HH:MM-HH:MM, 24-hour, start before end, end up to 24:00. "
        "Required for a scheduled lesson; none for kind on_demand."
    ),
]
RequestIdText = Annotated[
    str,
    StringConstraints(pattern=rf"^\s*{REQUEST_ID_PATTERN}\s*$"),
    Field(description="1-128 characters of A-Z a-z 0-9 . _ : @ / + = ~ -"),
]
LessonKind = Literal["scheduled", "on_demand"]
ReasonText = Annotated[
    str, StringConstraints(max_length=2000), Field(description="Why (free text).")
]


class LessonRequestFields(_Model):
    """A request for one lesson slot: its key, its idempotency key, what to generate."""

    provider_id: SkipValidation[ProviderIdText | None] = None
    school_id: SkipValidation[SchoolIdText | None] = None
    lesson_date: SkipValidation[LessonDateText | None] = None
    time_slot: SkipValidation[TimeSlotText | None] = None
    kind: SkipValidation[LessonKind] = "scheduled"
    request_id: SkipValidation[RequestIdText | None] = Field(
        None, description="The idempotency key of this request: the same id again is replayed."
    )
    details: SkipValidation[LessonDetails | None] = None
    correlation_id: SkipValidation[RequestIdText | None] = Field(
        None, description="Ties related requests together (a batch's id)."
    )


KEY_FIELDS = ("provider_id", "school_id", "lesson_date", "time_slot", "kind", "request_id")
"""The fields that name a slot and the request (a calendar group's, beside its details)."""
REQUEST_FIELDS = frozenset(LessonRequestFields.model_fields) | {"actor", "source"}
"""Everything `validate_request` takes: the request's fields, and who sent it from where."""
DETAIL_FIELDS = tuple(LessonDetails.model_fields)
"""What a request's details hold (a calendar group's fields beside its key)."""


@dataclass(frozen=True)
class RequestLesson:
    """A validated request for a lesson slot.

    `students` is kept apart from the other details: the sensitive per-student part
    (IEP goals, accommodations, reading levels) travels in its own event field.
    """

    key: LessonKey
    request_id: str
    actor: str
    details: dict[str, Any] | None
    students: list[dict[str, Any]] | None
    correlation_id: str | None
    source: str
    as_sent: dict[str, str]
    """The key's parts as the caller spelled them (shortened), kept for the audit."""
    details_size: int = 0
    """Bytes of the details as JSON."""
    fingerprint: Fingerprint | None = None
    """Set by the ledger, before the students' parts are sealed."""

    @property
    def payload_size(self) -> int:
        """Bytes of what the request carries as JSON (its details)."""
        return self.details_size

    def sealed(self, students: list[dict[str, Any]] | None, printed: Fingerprint) -> RequestLesson:
        """The request with its students' parts sealed, and its fingerprint (made before)."""
        # Its fields copied in one dict, as the library's mapper builds a stored event: the
        # frozen dataclass __init__ (or `replace`) would cost every request microseconds.
        request = object.__new__(RequestLesson)
        object.__setattr__(
            request, "__dict__", {**self.__dict__, "students": students, "fingerprint": printed}
        )
        return request


def validate_request(
    *,
    provider_id: object,
    school_id: object,
    lesson_date: object,
    time_slot: object = None,
    request_id: object,
    actor: object,
    kind: object = "scheduled",
    details: object = None,
    correlation_id: object = None,
    source: object = "api",
) -> RequestLesson:
    """Validate every field of a lesson request; raise InvalidLessonRequest naming all bad ones."""
    errors: list[FieldError] = []
    key = None
    try:
        key = parse_key(
            provider_id, school_id, lesson_date, time_slot, kind=kind, request_id=request_id
        )
    except InvalidLessonRequest as invalid:
        errors.extend(invalid.errors)
    rid = parse_field(errors, "request_id", canonical_request_id, request_id)
    who = parse_field(errors, "actor", check_actor, actor)
    batch = parse_field(errors, "correlation_id", check_correlation_id, correlation_id)
    origin = parse_field(errors, "source", check_source, source)
    parsed_details, students, size = _details(errors, details)
    if errors:
        raise InvalidLessonRequest(_unique(errors))
    assert key is not None and rid is not None and who is not None and origin is not None
    as_sent = spelled(
        provider_id=provider_id, school_id=school_id, lesson_date=lesson_date, time_slot=time_slot
    )
    return RequestLesson(key, rid, who, parsed_details, students, batch, origin, as_sent, size)


def spelled(**parts: object) -> dict[str, str]:
    """The parts as sent, as short text: enough to see two spellings of one key, too
    little to store a payload."""
    return {name: str(value)[:MAX_SPELLING] for name, value in parts.items() if value is not None}


def check_actor(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("is missing: say who is asking")
    text = value.strip()
    if len(text) > MAX_ACTOR_LENGTH or not text.isprintable():
        raise ValueError(f"must be at most {MAX_ACTOR_LENGTH} printable characters")
    return text


def check_student_id(value: object) -> str:
    """A student's id as a request's part holds it (`Student.id`, a `Text`). Erasure names
    the student so, or it would miss an id sent with a space."""
    return _text(value, "give the student's id, as requests sent it")


def check_erasure_reason(value: object) -> str:
    """Why a student's data is erased: kept with the erasure's record, so never blank."""
    return _text(value, "say why (kept with the erasure's record)")


def _text(value: object, needed: str) -> str:
    """A `Text` checked outside a model: its length as sent, trimmed, never blank."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"is missing: {needed}")
    if len(value) > TEXT_LENGTH:
        raise ValueError(f"must be at most {TEXT_LENGTH} characters")
    return value.strip()


def check_correlation_id(value: object) -> str | None:
    if value is None:
        return None
    return canonical_request_id(value)


def check_source(value: object) -> str:
    if value not in SOURCES:
        raise ValueError(f"must be one of {', '.join(SOURCES)}, not {value!r}")
    assert isinstance(value, str)
    return value


def check_reason(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise ValueError("must be text of at most 2000 characters")
    return value.strip() or None


def check_attempt(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"must be a whole number from 1, not {value!r}")
    return value


def check_content(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a non-empty JSON object")
    return check_plain_json(value)


_PLAIN_JSON = json.JSONEncoder(allow_nan=False, check_circular=True)


def check_plain_json(value: dict[str, Any]) -> dict[str, Any]:
    """The value, if it is plain JSON: objects, arrays, text, numbers (not NaN or
    infinite), true, false and null. Events keep free-form payloads as they are, and an
    event's JSON must read back as what was written (adapters/event_mapper.py)."""
    try:
        _PLAIN_JSON.encode(value)
    except TypeError as error:  # "Object of type UUID is not JSON serializable"
        found = str(error).removeprefix("Object of type ").split(" ")[0]
        raise ValueError(f"must be plain JSON, not hold a {found} value") from None
    except ValueError as error:
        if "Circular" in str(error):
            raise ValueError("must be plain JSON: it holds itself") from None
        raise ValueError("must be plain JSON: no NaN or infinite numbers") from None
    return value


def check_model(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError("must name the model that generated the lesson (1-200 characters)")
    return value.strip()


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def check_usage(value: object) -> dict[str, int] | None:
    """Tokens an attempt used: whole numbers from 0 under the keys of USAGE_KEYS."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"must be an object of token counts ({', '.join(USAGE_KEYS)})")
    usage: dict[str, int] = {}
    for name, count in value.items():
        if name not in USAGE_KEYS:
            raise ValueError(f"unknown count {str(name)[:40]!r}; use {', '.join(USAGE_KEYS)}")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**53:
            raise ValueError(f"{name} must be a whole number from 0, not {count!r}")
        usage[name] = count
    return usage


def check_fields(checks: list[tuple[str, Any, object]]) -> list[Any]:
    """Run (field, check, value) checks, raising one error that names every bad field."""
    errors: list[FieldError] = []
    values = [parse_field(errors, name, check, value) for name, check, value in checks]
    if errors:
        raise InvalidLessonRequest(errors)
    return values


def _details(
    errors: list[FieldError], details: object
) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None, int]:
    """The details without students, the students, and the details' size as JSON."""
    if details is None:
        return None, None, 0
    if isinstance(details, LessonDetails):
        parsed = details
    else:
        try:
            parsed = LessonDetails.model_validate(details)
        except ValidationError as invalid:
            errors.extend(_pydantic_errors(invalid, prefix="details"))
            return None, None, 0
    # Every field is a JSON type already (tests/domain/test_details.py checks it): the
    # Python dump is the JSON dump, a microsecond sooner.
    data = parsed.model_dump()
    size = len(orjson.dumps(data))
    if size > MAX_DETAILS_BYTES:
        # Lesson details are a few hundred bytes; a request this large is a mistake,
        # and very large writes stall the PostgreSQL driver (see README).
        errors.append(
            FieldError(
                field="details",
                message=f"is {size} bytes as JSON; at most {MAX_DETAILS_BYTES} are accepted",
            )
        )
        return None, None, 0
    students = data.pop("students")
    return data, students, size


def _pydantic_errors(invalid: ValidationError, prefix: str) -> list[FieldError]:
    found = []
    for error in invalid.errors():
        path = ".".join(str(part) for part in (prefix, *error["loc"]))
        message = error["msg"]
        if error["type"] == "value_error":  # our own check's words, without pydantic's prefix
            message = str(error.get("ctx", {}).get("error", message))
        if error["type"] == "extra_forbidden":
            message = "is not a known field"
            if str(error["loc"][-1]).lower() in {"name", "first_name", "last_name", "firstname"}:
                message += ": students are referred to by id only, never by name"
        found.append(FieldError(field=path, message=message))
    return found


def _unique(errors: list[FieldError]) -> list[FieldError]:
    seen: list[FieldError] = []
    for error in errors:
        if error not in seen:
            seen.append(error)
    return seen


@dataclass(frozen=True)
class ImportLesson:
    """A validated row of the old lessons table."""

    key: LessonKey
    legacy_id: str
    content: dict[str, Any] | None
    created_at: datetime | None
    updated_at: datetime | None
    flags: list[str]
    request_id: str
    actor: str
    correlation_id: str | None
    source: str
    as_sent: dict[str, str]
    fingerprint: Fingerprint | None = None
    """Set by the ledger, before the content is sealed."""

    @property
    def payload_size(self) -> int:
        """Bytes of what the row carries as JSON (its content)."""
        return len(json.dumps(self.content)) if self.content else 0


def validate_import(
    row: Mapping[str, Any], *, actor: str, correlation_id: str | None
) -> ImportLesson:
    """A legacy row as an import command; every bad field named at once."""
    errors: list[FieldError] = []
    legacy_id = parse_field(errors, "id", _legacy_id, row.get("id"))
    key: LessonKey | None = None
    flags: list[str] = []
    try:
        key, flags = parse_legacy_key(
            row.get("provider_id"),
            row.get("school_id"),
            row.get("lesson_date"),
            row.get("time_slot"),
            legacy_id or "",
        )
    except InvalidLessonRequest as invalid:
        errors.extend(invalid.errors)
    content = parse_field(errors, "content", _legacy_content, row.get("content"))
    created_at = parse_field(errors, "created_at", _timestamp, row.get("created_at"))
    updated_at = parse_field(errors, "updated_at", _timestamp, row.get("updated_at"))
    if errors:
        raise InvalidLessonRequest(_unique(errors))
    assert key is not None and legacy_id is not None
    as_sent = spelled(
        **{k: row.get(k) for k in ("provider_id", "school_id", "lesson_date", "time_slot")}
    )
    return ImportLesson(
        key,
        legacy_id,
        content,
        created_at,
        updated_at,
        flags,
        f"import-{legacy_id}",
        actor,
        correlation_id,
        "import",
        as_sent,
    )


def _legacy_id(value: object) -> str:
    if value is None or not str(value).strip():
        raise ValueError("is missing: every legacy row needs its id")
    return canonical_request_id(str(value).strip())


def _legacy_content(value: object) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return check_plain_json(value)


def _timestamp(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            stamp = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"is not an ISO timestamp: {str(value)[:40]!r}") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
