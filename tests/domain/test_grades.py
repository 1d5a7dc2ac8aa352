"""Grades as the calendar's grade parser sends them: -2 pre-kindergarten, -1 transitional
kindergarten, 0 kindergarten, 1-12."""

from __future__ import annotations

import pytest

from domain.commands import validate_request
from domain.errors import InvalidLessonRequest
from tests.support import A_REQUEST


@pytest.mark.parametrize("grade", [-2, -1, 0, 1, 12])
def test_pre_k_tk_k_and_grades_1_to_12_are_accepted(grade: int) -> None:
    details = {"students": [{"id": "st-1", "grade": grade}], "subject": "Speech"}
    request = validate_request(**A_REQUEST, details=details)
    assert request.students == [
        {
            "id": "st-1",
            "grade": grade,
            "reading_level": None,
            "iep_goals": None,
            "accommodations": None,
        }
    ]


@pytest.mark.parametrize(
    ("grade", "message"), [(-3, "greater than or equal to -2"), (13, "less than or equal to 12")]
)
def test_other_grades_are_refused_naming_the_field(grade: int, message: str) -> None:
    details = {"students": [{"id": "st-1", "grade": grade}], "subject": "Speech"}
    with pytest.raises(InvalidLessonRequest) as raised:
        validate_request(**A_REQUEST, details=details)
    [error] = raised.value.errors
    assert error["field"] == "details.students.0.grade" and message in error["message"]
