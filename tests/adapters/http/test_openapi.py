"""The OpenAPI document is valid, and a schemathesis run against the served API finds no
server error and no response outside the documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.openapi import from_url

from tests.support.served import Api, served

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    database = tmp_path_factory.mktemp("openapi") / "ledger.db"
    with served(f"sqlite:///{database}") as api:
        yield api


@pytest.mark.parametrize(
    ("role", "mode", "examples"),
    [
        ("admin", GenerationMode.POSITIVE, 30),
        ("admin", GenerationMode.NEGATIVE, 30),
        ("provider", GenerationMode.POSITIVE, 10),
    ],
)
def test_no_server_error_and_responses_match_the_schema(
    running: Api, role: str, mode: GenerationMode, examples: int
) -> None:
    schema = from_url(f"{running.base_url}/openapi.json")  # fails on an invalid document
    headers = running.auth(role, PROVIDER if role == "provider" else None)
    # An operation the document describes wrongly fails here (an error has no `ok`).
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10

    for operation in operations:
        if operation.path == "/v1/lessons/events":
            continue  # a stream that does not end; tests/adapters/http/test_lesson_events.py
        run_operation(operation, headers, mode, examples)


def run_operation(
    operation: Any, headers: dict[str, str], mode: GenerationMode, examples: int
) -> None:
    """Call one operation with generated cases and check every response."""
    # The request models are deliberately loose (the ledger names every bad field
    # itself), so "schema-valid" bodies may still be invalid lessons: a 422 there is
    # right. And a partial batch answers invalid items one by one, with a 200.
    left_out: list[Any] = [positive_data_acceptance]
    if operation.path.endswith("/batch"):
        left_out.append(negative_data_rejection)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, excluded_checks=left_out)

    try:
        call()
    except Unsatisfiable:
        # No invalid input exists for an operation without parameters (GET /health).
        assert mode is GenerationMode.NEGATIVE


def test_the_document_types_every_field_of_a_request_with_its_limits(running: Api) -> None:
    document = running.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    group = schemas["CalendarGroup"]["properties"]
    assert group["students"]["anyOf"][0]["items"] == {"$ref": "#/components/schemas/Student"}
    assert group["subjectType"]["anyOf"][0]["enum"] == ["ela", "math"]
    assert group["teacherRole"]["anyOf"][0]["enum"] == ["resource", "ot", "speech", "counseling"]
    assert (group["duration"]["anyOf"][0]["minimum"], group["duration"]["anyOf"][0]["maximum"]) == (
        5,
        120,
    )
    grade = schemas["Student"]["properties"]["grade"]
    assert grade["type"] == "integer" and (grade["minimum"], grade["maximum"]) == (-2, 12)
    assert "pre-kindergarten" in grade["description"]
    assert "transitional kindergarten" in grade["description"]
    single = schemas["LessonRequestBody"]["properties"]
    assert single["details"]["anyOf"][0] == {"$ref": "#/components/schemas/LessonDetails"}
    assert "pattern" in single["timeSlot"]["anyOf"][0]
    # No request field is left untyped (TypeScript would take anything for it).
    for name in ("CalendarGroup", "LessonRequestBody", "BatchBody", "ChangeBody", "Student"):
        for field, spec in schemas[name]["properties"].items():
            typed = {"type", "$ref", "anyOf", "enum", "allOf", "const"} & set(spec)
            assert typed, f"{name}.{field} is untyped in the OpenAPI document: {spec}"


@pytest.mark.parametrize("value", ["0.0", "1e3", " 5", "-1"])
def test_a_position_that_is_not_whole_digits_is_refused(running: Api, value: str) -> None:
    headers = running.auth("admin")
    answer = running.client.get("/v1/lessons", params={"min_position": value}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "min_position"
