"""The calendar front end's race: several clients post overlapping batches of the same
week's slots at once to servers on one database; what a user checks afterwards (tests
in tests/adapters/http/test_http_race.py, and through a pooler in
tests/adapters/postgres/test_pooler.py)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from eventsourcing.utils import get_topic

from domain import LessonSlot, lesson_id_for
from tests.support.json_logs import log_entries
from tests.support.stores import Store
from tests.support.together import in_threads_together

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
DAYS = ["2025-09-08", "2025-09-09", "2025-09-10", "2025-09-11", "2025-09-12"]
SLOTS = ["08:00-08:30", "08:30-09:00", "9:00-9:30", "09:30-10:00", "10:20-10:50", "11:00-11:30"]
DOCUMENTED = {"accepted", "replayed", "conflict", "duplicate_in_batch", "invalid"}


def week_batch(client: int) -> dict[str, Any]:
    """An overlapping share of the week's slots, in this client's own order."""
    chooser = random.Random(client)
    slots = [(day, slot) for day in DAYS for slot in SLOTS if chooser.random() < 0.8]
    chooser.shuffle(slots)
    return {
        "batch": [
            {
                "students": [{"id": f"st-{client}", "grade": 3}],
                "subject": "Reading",
                "subjectType": "ela",
                "duration": 30,
                "topic": "main idea",
                "teacherRole": "resource",
                "lessonDate": day,
                "timeSlot": slot,
                "schoolId": "school-1",
            }
            for day, slot in slots
        ]
    }


def race_calendar(
    servers: list[str], token: str, clients: int = 6, rounds: int = 3
) -> list[httpx.Response]:
    """`clients` threads, started together, each posting `rounds` batches (an
    Idempotency-Key each) to the servers in turn; every response (fails on any error)."""

    def client(number: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=servers[number % len(servers)], timeout=60) as http:
            return [
                http.post(
                    "/v1/lessons/requests/batch",
                    json=week_batch(number * 10 + round_),
                    headers={**headers, "Idempotency-Key": f"client-{number}-round-{round_}"},
                )
                for round_ in range(rounds)
            ]

    responses = [r for sent in in_threads_together(client, clients) for r in sent]
    assert len(responses) == clients * rounds
    return responses


def assert_one_request_per_slot(
    responses: list[httpx.Response], store: Store, server: str, token: str
) -> None:
    """Every answer documented; each slot of the week accepted once, in the API's answers,
    in the ledger's events and in the read model (read once it has every request)."""
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses][:3]
    outcomes: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    for response in responses:
        for item in response.json()["items"]:
            outcomes[item["outcome"]] += 1
            if item["outcome"] == "accepted":
                accepted[item["lesson_id"]] += 1
            if item["outcome"] == "conflict":
                assert item["error"]["holder"]["request_id"]
    assert set(outcomes) <= DOCUMENTED
    slots = {str(lesson_id_for(PROVIDER, "school-1", d, s)) for d in DAYS for s in SLOTS}
    requested = set(accepted)
    assert requested == slots  # every slot of the week was asked for (seeded choices)
    assert all(count == 1 for count in accepted.values()), "a slot was accepted twice"
    # Every slot somebody asked for was decided exactly once in the ledger itself.
    table = store.database.events_table
    # A request for a new slot is its OpenedByRequest; a later request, LessonRequested.
    requests = [get_topic(LessonSlot.OpenedByRequest), get_topic(LessonSlot.LessonRequested)]
    rows = store.query(
        f"SELECT originator_id::text, count(*) FROM {table} WHERE topic = ANY(%s)"
        " GROUP BY originator_id",
        (requests,),
    )
    assert {lesson_id for lesson_id, _ in rows} == requested
    assert all(count == 1 for _, count in rows)
    # The read model has exactly one row per slot, once it has every accepted request.
    last = max(i["position"] for r in responses for i in r.json()["items"] if i["position"])
    listed = httpx.get(
        f"{server}/v1/lessons",
        params={"min_position": last, "limit": 500},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    rows = listed.json()["items"]
    assert sorted(row["lesson_id"] for row in rows) == sorted(requested)
    assert {row["status"] for row in rows} <= {"requested", "generated"}


def serving_pids(*logs: Path) -> set[int | None]:
    """The processes whose JSON log lines show they served a batch."""
    entries = (entry for log in logs for entry in log_entries(log))
    return {e.get("pid") for e in entries if e.get("path") == "/v1/lessons/requests/batch"}
