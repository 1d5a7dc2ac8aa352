"""What the HTTP API's tests share: providers, request bodies as the calendar front end
builds them, the check that an answer is a problem detail, and signing in to the pages."""

from __future__ import annotations

import re
from typing import Any

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
OTHER_PROVIDER = "0b7f0a3e-3c5d-4e6f-8a9b-0c1d2e3f4a5b"
PROBLEM = "application/problem+json"


def lesson(slot: str = "08:30-09:00", request_id: str = "r-1", **changes: Any) -> dict[str, Any]:
    """A request body in the calendar front end's camelCase."""
    return {
        "schoolId": "school-1",
        "lessonDate": "2025-09-08",
        "timeSlot": slot,
        "requestId": request_id,
        "details": {"students": [{"id": "st-1", "grade": 2}], "subject": "Math"},
        **changes,
    }


def calendar_batch(*slots: str) -> dict[str, Any]:
    """The calendar front end's batch body, as it sends it."""
    return {
        "batch": [
            {
                "students": [{"id": "st-1", "grade": 1}],
                "subject": "Reading",
                "subjectType": "ela",
                "duration": 30,
                "topic": "short vowels",
                "teacherRole": "resource",
                "lessonDate": "2025-09-08",
                "timeSlot": slot,
                "schoolId": "school-1",
            }
            for slot in slots
        ]
    }


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def csrf(html: str) -> str:
    """The CSRF token of a page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: Any, token: str) -> Any:
    """Sign a client of the pages (TestClient or httpx) in with a token, as the form does."""
    form = client.get("/sign-in")
    return client.post("/sign-in", data={"token": token, "csrf_token": csrf(form.text)})
