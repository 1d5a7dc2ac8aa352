"""A request's details as the ledger keeps them: plain JSON, whatever the caller sent
(the ledger stores them, prints them and seals them as JSON)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from domain.commands import LessonDetails, validate_request
from tests.support import A_REQUEST

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
WORDS = TEXT.filter(lambda text: bool(text.strip()))
STUDENTS = st.lists(
    st.fixed_dictionaries(
        {"id": WORDS, "grade": st.integers(-2, 12)},
        optional={
            "readingLevel": WORDS,
            "iepGoals": st.lists(WORDS, max_size=3),
            "accommodations": st.lists(WORDS, max_size=3),
        },
    ),
    min_size=1,
    max_size=3,
)
DETAILS = st.fixed_dictionaries(
    {"students": STUDENTS, "subject": WORDS},
    optional={
        "subjectType": st.sampled_from(["ela", "math"]),
        "teacherRole": st.sampled_from(["resource", "ot", "speech", "counseling"]),
        "topic": WORDS,
        "duration": st.integers(5, 120),
        "focusSkills": st.lists(WORDS, max_size=3),
    },
)


@given(DETAILS)
def test_the_kept_details_are_plain_json_as_the_model_writes_json(details: dict[str, Any]) -> None:
    request = validate_request(**A_REQUEST, details=details)
    kept = {**(request.details or {}), "students": request.students}
    assert orjson.loads(orjson.dumps(kept)) == kept
    assert kept == LessonDetails.model_validate(details).model_dump(mode="json")
