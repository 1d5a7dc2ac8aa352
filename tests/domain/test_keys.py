"""The lesson key: every accepted spelling of a slot is one canonical form and one lesson
id; every rejected input names its field."""

from __future__ import annotations

import calendar
import re
import uuid
from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain import LEDGER_NAMESPACE, InvalidLessonRequest, lesson_id_for, parse_key

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def field_errors(call: object) -> dict[str, str]:
    """The {field: message} of the InvalidLessonRequest that `call` raises."""
    assert callable(call)
    with pytest.raises(InvalidLessonRequest) as raised:
        call()
    return {error["field"]: error["message"] for error in raised.value.errors}


@st.composite
def slot_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """A valid slot in a random accepted spelling, and its canonical form."""
    start = draw(st.integers(0, 24 * 60 - 2))
    end = draw(st.integers(start + 1, 24 * 60))
    (sh, sm), (eh, em) = divmod(start, 60), divmod(end, 60)

    def clock(hours: int, minutes: int) -> str:
        padded = draw(st.booleans()) or hours >= 10
        return f"{hours:02d}:{minutes:02d}" if padded else f"{hours}:{minutes:02d}"

    space = st.sampled_from(["", " ", "  ", "\t"])
    dash = draw(st.sampled_from(["-", "\u2013"]))
    text = (
        f"{draw(space)}{clock(sh, sm)}{draw(space)}{dash}{draw(space)}{clock(eh, em)}{draw(space)}"
    )
    return text, f"{sh:02d}:{sm:02d}-{eh:02d}:{em:02d}"


@given(slot_spellings(), slot_spellings())
def test_every_spelling_of_a_slot_is_one_canonical_form_and_one_lesson_id(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    spelling, canonical = first
    key = parse_key(PROVIDER, "school-1", "2025-09-05", spelling)
    assert key.time_slot == canonical
    assert key.lesson_id == lesson_id_for(PROVIDER, "school-1", "2025-09-05", canonical)
    other_spelling, other_canonical = second
    same_slot = other_canonical == canonical
    other_id = lesson_id_for(PROVIDER, "school-1", "2025-09-05", other_spelling)
    assert (other_id == key.lesson_id) == same_slot


def test_the_incident_reports_spellings_are_the_same_slot() -> None:
    ids = {
        lesson_id_for(PROVIDER, "school-1", "2025-09-05", spelling)
        for spelling in ["8:30-9:00", "08:30 - 09:00", "08:30\u201309:00", " 08:30-09:00 "]
    }
    assert len(ids) == 1


@given(st.uuids(), st.sampled_from(["lower", "upper", "braces", "urn", "hex"]))
def test_every_standard_form_of_a_provider_uuid_is_one_provider(
    provider: uuid.UUID, form: str
) -> None:
    text = {
        "lower": str(provider),
        "upper": str(provider).upper(),
        "braces": "{" + str(provider) + "}",
        "urn": provider.urn,
        "hex": provider.hex,
    }[form]
    key = parse_key(text, "school-1", "2025-09-05", "08:00-08:30")
    assert key.provider_id == str(provider)


@given(st.uuids())
def test_a_school_uuid_is_lowercased(school: uuid.UUID) -> None:
    upper = parse_key(PROVIDER, str(school).upper(), "2025-09-05", "08:00-08:30")
    assert upper.school_id == str(school)


@given(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True))
def test_a_school_id_is_kept_as_given(school: str) -> None:
    assume(school.lower() not in {"null", "none", "undefined", "nil"})
    assume(not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", school))
    assert parse_key(PROVIDER, f" {school} ", "2025-09-05", "08:00-08:30").school_id == school


def test_the_published_id_recipe() -> None:
    """Other systems compute lesson ids from the README's recipe: keep it stable."""
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:lesson-ledger:lesson-slot") == LEDGER_NAMESPACE
    recipe = uuid.uuid5(LEDGER_NAMESPACE, f"{PROVIDER}|school-1|2025-09-05|08:30-09:00")
    lesson_id = lesson_id_for(PROVIDER.upper(), "school-1", "2025-09-05", "8:30-9:00")
    assert lesson_id == recipe == uuid.UUID("689694ac-5241-543e-b8eb-6b59aeff777a")


@given(
    st.uuids(),
    st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    st.dates(),
    st.integers(0, 24 * 60 - 1),
)
def test_every_key_has_the_published_recipes_id(
    provider: uuid.UUID, school: str, day: date, start: int
) -> None:
    assume(school.lower() not in {"null", "none", "undefined", "nil"})
    assume(not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", school))
    slot = f"{start // 60:02d}:{start % 60:02d}-{(start + 1) // 60:02d}:{(start + 1) % 60:02d}"
    key = parse_key(str(provider), school, day.isoformat(), slot)
    assert key.lesson_id == uuid.uuid5(LEDGER_NAMESPACE, key.text)
    assert key.text == f"{provider}|{school}|{day.isoformat()}|{slot}"


@pytest.mark.parametrize("slot", [None, "", "   ", "structured", "Structured ", "STRUCTURED"])
def test_a_scheduled_lesson_without_a_time_slot_points_to_on_demand(slot: str | None) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "school-1", "2025-09-05", slot))
    assert set(errors) == {"time_slot"}
    assert "time slot missing" in errors["time_slot"]
    assert "kind: on_demand" in errors["time_slot"]


@given(
    st.text(min_size=1, max_size=30).filter(
        lambda t: not re.fullmatch(r"\s*\d{1,2}:\d{2}\s*[-\u2013]\s*\d{1,2}:\d{2}\s*", t)
    )
)
def test_any_text_that_is_not_a_range_is_rejected_naming_the_time_slot(text: str) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "school-1", "2025-09-05", text))
    assert set(errors) == {"time_slot"}


@given(st.integers(0, 24 * 60), st.integers(0, 24 * 60))
def test_a_range_that_does_not_end_after_it_starts_is_rejected(start: int, end: int) -> None:
    assume(end <= start)
    (sh, sm), (eh, em) = divmod(start, 60), divmod(end, 60)
    assume(sh < 24)
    errors = field_errors(
        lambda: parse_key(
            PROVIDER, "school-1", "2025-09-05", f"{sh:02d}:{sm:02d}-{eh:02d}:{em:02d}"
        )
    )
    assert "end after it starts" in errors["time_slot"]


@pytest.mark.parametrize("slot", ["24:00-24:30", "08:60-09:00", "08:00-25:00", "23:30-24:01"])
def test_an_out_of_range_time_is_rejected(slot: str) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "school-1", "2025-09-05", slot))
    assert "time_slot" in errors


def test_a_slot_may_end_at_midnight() -> None:
    assert parse_key(PROVIDER, "s", "2025-09-05", "23:30-24:00").time_slot == "23:30-24:00"


@st.composite
def impossible_dates(draw: st.DrawFn) -> str:
    year, month = draw(st.integers(1900, 2100)), draw(st.integers(1, 12))
    day = draw(st.integers(calendar.monthrange(year, month)[1] + 1, 39))
    return f"{year:04d}-{month:02d}-{day:02d}"


@given(impossible_dates())
def test_a_date_that_is_not_on_the_calendar_is_rejected(text: str) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "school-1", text, "08:00-08:30"))
    assert errors == {"lesson_date": f"is not a real calendar date: {text!r}"}


@given(st.dates())
def test_every_calendar_date_is_accepted_in_iso_form(day: date) -> None:
    assume(day.year >= 1000)
    assert parse_key(PROVIDER, "school-1", day.isoformat(), "08:00-08:30").lesson_date == day


@pytest.mark.parametrize("text", ["05/09/2025", "2025-9-5", "20250905", "2025-09-05T08:00"])
def test_other_date_formats_are_rejected(text: str) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "school-1", text, "08:00-08:30"))
    assert "YYYY-MM-DD" in errors["lesson_date"]


@pytest.mark.parametrize("school", [None, "", "   ", "null", "undefined"])
def test_a_missing_school_is_rejected_because_duplicates_cannot_be_checked(
    school: str | None,
) -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, school, "2025-09-05", "08:00-08:30"))
    assert "cannot be checked for duplicates" in errors["school_id"]


@pytest.mark.parametrize("school", ["a" * 65, "school one", "school/1", "é"])
def test_a_school_id_outside_the_alphabet_is_rejected(school: str) -> None:
    assert "school_id" in field_errors(
        lambda: parse_key(PROVIDER, school, "2025-09-05", "08:00-08:30")
    )


@pytest.mark.parametrize("provider", [None, "", "not-a-uuid", "1234", 42])
def test_a_provider_that_is_not_a_uuid_is_rejected(provider: object) -> None:
    assert "provider_id" in field_errors(
        lambda: parse_key(provider, "school-1", "2025-09-05", "08:00-08:30")
    )


def test_every_bad_field_is_named_at_once() -> None:
    errors = field_errors(lambda: parse_key("nope", None, "2025-02-30", "structured"))
    assert set(errors) == {"provider_id", "school_id", "lesson_date", "time_slot"}


@given(
    st.lists(
        st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True), min_size=2, max_size=10, unique=True
    )
)
def test_on_demand_lessons_share_provider_school_and_date(request_ids: list[str]) -> None:
    keys = [
        parse_key(PROVIDER, "school-1", "2025-09-05", None, kind="on_demand", request_id=rid)
        for rid in request_ids
    ]
    assert len({key.lesson_id for key in keys}) == len(request_ids)
    for key, rid in zip(keys, request_ids, strict=True):
        assert key.time_slot == f"on-demand-{rid}"
        assert key.kind == "on_demand"
        assert lesson_id_for(PROVIDER, "school-1", "2025-09-05", key.time_slot) == key.lesson_id


def test_an_on_demand_lesson_has_no_time_slot() -> None:
    errors = field_errors(
        lambda: parse_key(
            PROVIDER, "s", "2025-09-05", "08:00-08:30", kind="on_demand", request_id="r"
        )
    )
    assert "on-demand lesson has no time slot" in errors["time_slot"]


def test_an_on_demand_slot_sent_as_a_scheduled_time_slot_points_to_on_demand() -> None:
    errors = field_errors(lambda: parse_key(PROVIDER, "s", "2025-09-05", "on-demand-abc"))
    assert "kind: on_demand" in errors["time_slot"]


def test_an_unknown_kind_is_rejected() -> None:
    assert "kind" in field_errors(
        lambda: parse_key(PROVIDER, "s", "2025-09-05", "08:00-08:30", kind="weekly")
    )


def test_an_imported_start_only_slot_has_a_computable_id() -> None:
    assert lesson_id_for(PROVIDER, "s", "2025-09-05", "8:00") == lesson_id_for(
        PROVIDER, "s", "2025-09-05", "08:00"
    )
    assert lesson_id_for(PROVIDER, "s", "2025-09-05", "08:00") != lesson_id_for(
        PROVIDER, "s", "2025-09-05", "08:00-08:30"
    )
