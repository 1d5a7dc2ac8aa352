"""Reads from the lessons read model through real HTTP, on SQLite and PostgreSQL:
read-your-writes with `min_position`, filters and pages, provider isolation, and the
projections' status and rebuild."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from projections.view import SHADOW
from tests.support.http import OTHER_PROVIDER, PROVIDER, assert_problem, lesson
from tests.support.projections import read_model, wait_until
from tests.support.served import Api, served
from tests.support.stores import Store


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    with served(store.url) as running:
        yield running


def request(api: Api, slot: str, request_id: str, provider: str = PROVIDER, **changes: Any) -> Any:
    response = api.client.post(
        "/v1/lessons/requests",
        json=lesson(slot=slot, request_id=request_id, **changes),
        headers=api.auth("provider", provider),
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_command_is_readable_at_once_with_its_position(api: Api) -> None:
    created = request(api, "08:30-09:00", "r-1")

    response = api.client.get(
        f"/v1/lessons/{created['lesson_id']}",
        params={"min_position": created["position"]},
        headers=api.auth("provider", PROVIDER),
    )

    assert response.status_code == 200
    row = response.json()
    assert (row["status"], row["attempt"], row["request_id"]) == ("requested", 1, "r-1")
    assert (row["school_id"], row["lesson_date"], row["time_slot"]) == (
        "school-1",
        "2025-09-08",
        "08:30-09:00",
    )


def test_a_position_beyond_the_log_is_422(api: Api) -> None:
    created = request(api, "08:30-09:00", "r-1")
    response = api.client.get(
        f"/v1/lessons/{created['lesson_id']}",
        params={"min_position": created["position"] + 1000},
        headers=api.auth("admin"),
    )
    assert assert_problem(response, 422)["errors"][0]["field"] == "min_position"


def test_listing_filters_and_pages(api: Api) -> None:
    last = None
    for day in ("2025-09-08", "2025-09-09", "2025-09-10"):
        for hour in (8, 9, 10):
            last = request(api, f"{hour:02d}:00-{hour:02d}:30", f"r-{day}-{hour}", lessonDate=day)
    request(api, "08:00-08:30", "other", provider=OTHER_PROVIDER)
    assert last is not None
    admin = api.auth("admin")

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {
            "provider_id": PROVIDER,
            "limit": 4,
            "min_position": last["position"],
        }
        if cursor:
            params["cursor"] = cursor
        page = api.client.get("/v1/lessons", params=params, headers=admin).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    week = api.client.get(
        "/v1/lessons",
        params={"provider_id": PROVIDER, "from": "2025-09-09", "to": "2025-09-10"},
        headers=admin,
    ).json()["items"]
    cancelled = api.client.get("/v1/lessons", params={"status": "cancelled"}, headers=admin).json()[
        "items"
    ]

    listed = [row for page in pages for row in page]
    assert [len(page) for page in pages][:2] == [4, 4]
    assert len(listed) == 9 and len({row["lesson_id"] for row in listed}) == 9
    assert [(r["lesson_date"], r["time_slot"]) for r in listed] == sorted(
        (r["lesson_date"], r["time_slot"]) for r in listed
    )
    assert {row["lesson_date"] for row in week} == {"2025-09-09", "2025-09-10"}
    assert len(week) == 6
    assert cancelled == []


def test_bad_filters_are_422_naming_the_parameter(api: Api) -> None:
    admin = api.auth("admin")
    response = api.client.get("/v1/lessons", params={"from": "2025-02-30"}, headers=admin)
    assert assert_problem(response, 422)["errors"][0]["field"] == "from"
    response = api.client.get("/v1/lessons", params={"cursor": "garbage"}, headers=admin)
    assert assert_problem(response, 422)["errors"][0]["field"] == "cursor"
    # Swapped dates: an empty page before.
    swapped = {"from": "2025-09-05", "to": "2025-09-01"}
    response = api.client.get("/v1/lessons", params=swapped, headers=admin)
    assert assert_problem(response, 422)["errors"] == [
        {"field": "to", "message": "2025-09-01 is before the first date (2025-09-05)"}
    ]
    for number in ("-1", "0.0", "1e3"):
        response = api.client.get("/v1/lessons", params={"min_position": number}, headers=admin)
        assert assert_problem(response, 422)["errors"] == [
            {"field": "min_position", "message": "must be a whole number"}
        ]


def test_a_provider_reads_only_its_own_lessons(api: Api) -> None:
    mine = request(api, "08:30-09:00", "mine")
    theirs = request(api, "08:30-09:00", "theirs", provider=OTHER_PROVIDER)
    headers = api.auth("provider", PROVIDER)

    listed = api.client.get(
        "/v1/lessons", params={"min_position": theirs["position"]}, headers=headers
    ).json()["items"]
    asking_for_other = api.client.get(
        "/v1/lessons", params={"provider_id": OTHER_PROVIDER}, headers=headers
    )
    other_lesson = api.client.get(f"/v1/lessons/{theirs['lesson_id']}", headers=headers)
    no_lesson = api.client.get(f"/v1/lessons/{uuid4()}", headers=headers)

    assert [row["lesson_id"] for row in listed] == [mine["lesson_id"]]
    assert_problem(asking_for_other, 403)
    # Another provider's lesson and no lesson look the same to a provider token.
    assert_problem(other_lesson, 403)
    assert_problem(no_lesson, 403)
    assert other_lesson.json()["title"] == no_lesson.json()["title"]
    assert_problem(api.client.get(f"/v1/lessons/{uuid4()}", headers=api.auth("admin")), 404)


def test_projection_status_and_a_rebuild_over_http(api: Api) -> None:
    last = None
    for hour in range(8, 14):
        last = request(api, f"{hour:02d}:00-{hour:02d}:30", f"r-{hour}")
    assert last is not None
    admin = api.auth("admin")
    api.client.get("/v1/lessons", params={"min_position": last["position"]}, headers=admin)

    # The server's follower of the log's tree catches up by itself (polling on SQLite).
    status = wait_until(
        lambda: (
            (found := api.client.get("/v1/projections", headers=admin).json())[1]["lag"] == 0
            and found
        ),
        what="the log's tree caught up",
    )
    forbidden = api.client.post(
        "/v1/projections/lessons/rebuild", headers=api.auth("provider", PROVIDER)
    )
    unknown = api.client.post("/v1/projections/nope/rebuild", headers=admin)
    started = api.client.post("/v1/projections/lessons/rebuild", headers=admin)

    lessons_status, tree_status = status
    assert (lessons_status["name"], lessons_status["position"], lessons_status["lag"]) == (
        "lessons",
        last["position"],
        0,
    )
    assert (tree_status["name"], tree_status["position"], tree_status["head"]) == (
        "merkle",
        last["position"],
        last["position"],
    )
    assert_problem(forbidden, 403)
    assert_problem(unknown, 404)
    assert started.status_code == 202
    deadline = time.monotonic() + 30
    while True:  # the rebuild reports its progress until it has swapped
        lessons = api.client.get("/v1/projections", headers=admin).json()[0]
        if lessons["rebuild"] is None and not api.app.state.rebuild_thread.is_alive():
            break
        assert time.monotonic() < deadline, "the rebuild did not finish in 30 s"
        time.sleep(0.02)
    rows = api.client.get("/v1/lessons", headers=admin).json()["items"]
    assert len(rows) == 6 and lessons["lag"] == 0


def test_a_rebuild_asked_for_while_another_process_rebuilds_says_running(
    api: Api, store: Store
) -> None:
    admin = api.auth("admin")
    with read_model(store) as elsewhere:  # another process's rebuild holds its lock
        lock = elsewhere.view.runner_lock(SHADOW)
        assert lock.acquire(wait=False)
        try:
            asked = api.client.post("/v1/projections/lessons/rebuild", headers=admin)
            assert (asked.status_code, asked.json()["status"]) == (202, "running")
            assert getattr(api.app.state, "rebuild_thread", None) is None  # none begun here
        finally:
            lock.release()
    again = api.client.post("/v1/projections/lessons/rebuild", headers=admin)
    assert again.json()["status"] == "started"


def test_a_rebuild_that_fails_in_the_background_is_one_line_in_the_log(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing on the way, say (its progress shows as interrupted)."""
    read_model = api.app.state.read_model

    def failing(**_: Any) -> None:
        raise OSError("could not extend file: No space left on device")

    monkeypatch.setattr(read_model, "rebuild", failing)
    started = api.client.post("/v1/projections/lessons/rebuild", headers=api.auth("admin"))
    assert started.status_code == 202
    api.app.state.rebuild_thread.join(10)

    failed = [r for r in caplog.records if r.name == "lesson_ledger.projections"]
    assert [r.getMessage() for r in failed] == [
        "rebuild of the lessons table failed: could not extend file: No space left on device"
    ]
    assert failed[0].exc_info is None  # one line, no traceback
    assert api.client.get("/health").status_code == 200


def test_a_misspelt_query_parameter_is_422_not_a_wider_listing(api: Api) -> None:
    response = api.client.get(
        "/v1/lessons", params={"provider": PROVIDER}, headers=api.auth("admin")
    )
    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"field": "provider", "message": "is not a known query parameter"}]
