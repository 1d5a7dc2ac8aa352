"""The lesson page after an erasure, read as an auditor reads it: how many of its students
were erased, and that the content is gone because of it, on SQLite and PostgreSQL."""

from __future__ import annotations

from uuid import UUID

from tests.support.http import PROVIDER, lesson, sign_in
from tests.support.served import served
from tests.support.stores import Store


def test_the_lesson_page_says_what_an_erasure_took(store: Store) -> None:
    with served(store.url) as api:
        students = [{"id": "st-1", "grade": 2}, {"id": "st-2", "grade": 3}]
        created = api.client.post(
            "/v1/lessons/requests",
            json=lesson(providerId=PROVIDER, details={"students": students, "subject": "Math"}),
            headers=api.auth("admin"),
        )
        assert created.status_code == 201, created.text
        lesson_id = created.json()["lesson_id"]
        ledger = api.app.state.ledger
        ledger.record_generation(
            lesson_id=UUID(lesson_id), attempt=1, content={"lesson": {"title": "t"}}, model="m"
        )
        sign_in(api.client, api.tokens["admin:None"])
        before = api.client.get(f"/lessons/{lesson_id}")
        erased = api.client.post(
            "/v1/students/st-1/erasure", json={"reason": "r"}, headers=api.auth("admin")
        )
        assert erased.status_code == 200, erased.text

        after = api.client.get(f"/lessons/{lesson_id}")

    assert before.status_code == after.status_code == 200
    assert "erased" not in before.text and "the generated lesson" in before.text
    assert "2 (1 erased)" in after.text  # the lesson's students
    assert "2 student(s), 1 erased" in after.text  # its request, in the timeline
    assert "unavailable (erased)" in after.text and "the generated lesson" not in after.text
