"""`lesson-ledger serve` (what `make run` starts): the embedded SQLite default, and the
first admin token created and printed once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.served import serving_process

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def test_the_first_start_prints_an_admin_token_once_and_it_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serving_process(url, tmp_path / "first.log") as (base_url, process):
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("Created the first admin token")
        token = first_line.rsplit(" ", 1)[1].strip()
        body = {
            "providerId": PROVIDER,
            "schoolId": "school-1",
            "lessonDate": "2025-09-08",
            "timeSlot": "08:30-09:00",
            "requestId": "first-request",
            "details": {"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"},
        }
        response = httpx.post(
            f"{base_url}/v1/lessons/requests",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201
        # The embedded worker generates it: no other process needed on the default.
        lesson_id, headers = response.json()["lesson_id"], {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:
            lesson = httpx.get(f"{base_url}/v1/lessons/{lesson_id}", headers=headers).json()
            if lesson.get("status") == "generated":
                break
            assert time.monotonic() < deadline, f"not generated within 30 s: {lesson}"
            time.sleep(0.05)
        assert lesson["content"]["lesson"]["title"] and lesson["model"]

    with serving_process(url, tmp_path / "second.log") as (_, again):
        assert again.stdout is not None
        assert not again.stdout.readline().startswith("Created the first admin token")
    assert token not in (tmp_path / "first.log").read_text()
