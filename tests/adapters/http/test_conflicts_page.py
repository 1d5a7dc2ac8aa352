"""The conflicts page as an auditor reads it, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support.http import PROVIDER, sign_in
from tests.support.served import served
from tests.support.stores import Store


def test_the_conflicts_page_shows_a_batch_that_sent_one_lesson_twice(store: Store) -> None:
    """The calendar's week with two groups on one slot: the page names the batch as its
    own holder and links the lesson."""
    group = {"students": [{"id": "st-1", "grade": 2}], "subject": "Math"}
    week = {
        "batch": [
            {"lessonDate": "2025-09-05", "timeSlot": slot, "schoolId": "school-1", **group}
            for slot in ("8:30-9:00", "08:30 - 09:00")
        ]
    }
    with served(store.url) as api:
        sent = api.client.post(
            "/v1/lessons/requests/batch",
            json=week,
            headers={**api.auth("provider", PROVIDER), "Idempotency-Key": "cw:batch:2025-09-05:2"},
        )
        assert sent.status_code == 200, sent.text
        outcomes = [item["outcome"] for item in sent.json()["items"]]
        assert outcomes == ["accepted", "duplicate_in_batch"]
        lesson_id = sent.json()["items"][0]["lesson_id"]
        api.auth("admin")
        sign_in(api.client, api.tokens["admin:None"])

        page = api.client.get("/conflicts?since=2025-01-01")
        # Up to the calendar's last day: no end (the day after it was an OverflowError).
        to_the_end = api.client.get("/conflicts?since=2025-01-01&until=9999-12-31")
        swapped = api.client.get("/conflicts?since=2025-09-05&until=2025-09-01")

    assert page.status_code == to_the_end.status_code == 200
    assert "(itself: one lesson sent twice)" in page.text
    assert "(itself: one lesson sent twice)" in to_the_end.text
    # Swapped dates: an empty report, as if nothing had been turned away.
    assert swapped.status_code == 400
    assert "2025-09-01 is before since (2025-09-05)" in swapped.text
    assert f'href="/lessons/{lesson_id}"' in page.text


def test_the_conflicts_page_lists_every_request_refused_as_invalid(store: Store) -> None:
    """A request with no slot and one with a slot and a school but no students: both are
    refused as invalid, under a heading that is true of both."""
    base = {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-05",
        "details": {"subject": "Math", "students": [{"id": "st-1", "grade": 2}]},
    }
    with served(store.url) as api:
        headers = api.auth("admin")
        sign_in(api.client, api.tokens["admin:None"])
        empty = api.client.get("/conflicts?since=2025-01-01")
        no_slot = {**base, "time_slot": "structured", "request_id": "r-no-slot"}
        no_students = {**base, "time_slot": "08:30-09:00", "request_id": "r-no-students"}
        no_students["details"] = {"subject": "Math"}
        for body in (no_slot, no_students):
            sent = api.client.post("/v1/lessons/requests", json=body, headers=headers)
            assert sent.status_code == 422, sent.text
        page = api.client.get("/conflicts?since=2025-01-01")

    assert "No request was refused as invalid." in empty.text
    assert "<h2>Requests refused as invalid</h2>" in page.text
    section = page.text.split("<h2>Requests refused as invalid</h2>")[1]
    assert "r-no-slot" in section and "time_slot=structured" in section
    assert "r-no-students" in section and "details.students: Field required" in section
    assert "without a slot or a school" not in page.text
