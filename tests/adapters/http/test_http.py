"""The HTTP API through real HTTP (uvicorn on a loopback port), on SQLite and PostgreSQL:
every endpoint and every status code the design names."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest

from adapters.logs import CurrentStderr, JsonFormatter
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from tests.support.http import (
    OTHER_PROVIDER,
    PROVIDER,
    assert_problem,
    calendar_batch,
    lesson,
)
from tests.support.project import declared_version
from tests.support.projections import wait_until
from tests.support.served import Api, served
from tests.support.stores import Store


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    with served(store.url) as running:
        yield running


def test_a_request_is_201_then_200_replayed_then_409_naming_the_holder(api: Api) -> None:
    provider = api.auth("provider", PROVIDER)

    accepted = api.client.post("/v1/lessons/requests", json=lesson(), headers=provider)
    replayed = api.client.post(
        "/v1/lessons/requests", json=lesson(slot="8:30 - 9:00"), headers=provider
    )
    conflict = api.client.post(
        "/v1/lessons/requests", json=lesson(request_id="r-2"), headers=provider
    )

    assert accepted.status_code == 201
    body = accepted.json()
    assert set(body) == {"lesson_id", "outcome", "attempt", "position"}
    assert (body["outcome"], body["attempt"]) == ("accepted", 1)
    assert isinstance(body["position"], int)
    assert replayed.status_code == 200
    assert replayed.json() == {**body, "outcome": "replayed", "position": None}
    problem = assert_problem(conflict, 409)
    assert problem["holder"]["request_id"] == "r-1"
    assert problem["holder"]["status"] == "requested"
    assert problem["holder"]["actor"].startswith("provider-")


def test_snake_case_requests_are_accepted_too(api: Api) -> None:
    body = {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-08",
        "time_slot": "10:00-10:30",
        "request_id": "snake",
    }
    response = api.client.post("/v1/lessons/requests", json=body, headers=api.auth("admin"))
    assert response.status_code == 201


def test_invalid_requests_are_422_naming_every_field_and_write_nothing(
    api: Api, store: Store
) -> None:
    provider = api.auth("provider", PROVIDER)
    api.client.post("/v1/lessons/requests", json=lesson(), headers=provider)
    written = store.count_events()

    response = api.client.post(
        "/v1/lessons/requests",
        json={
            "schoolId": None,
            "lessonDate": "2025-02-30",
            "timeSlot": "structured",
            "requestId": "r-x",
            "details": {"students": [{"id": "a", "grade": 14}], "subject": "Math"},
        },
        headers=provider,
    )

    problem = assert_problem(response, 422)
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"school_id", "lesson_date", "time_slot", "details.students.0.grade"}
    assert store.count_events() == written


BAD_BODIES: list[tuple[str, bytes, int]] = [
    ("invalid JSON", b'{"schoolId": ', 422),
    ("not UTF-8", b'{"schoolId": "\xff\xfe"}', 400),
    ("a JSON list", b"[1, 2]", 422),
    ("unknown field", json.dumps({**lesson(), "studentName": "Ann"}).encode(), 422),
    ("wrong types", json.dumps({**lesson(), "schoolId": 5, "lessonDate": True}).encode(), 422),
    ("huge string", json.dumps({**lesson(), "schoolId": "s" * 500_000}).encode(), 422),
    ("wrong kind", json.dumps({**lesson(), "kind": "weekly"}).encode(), 422),
    ("wrong details", json.dumps({**lesson(), "details": {"students": "all"}}).encode(), 422),
]


UNREADABLE: list[tuple[str, bytes, str]] = [
    ("not UTF-8", b'{"schoolId": "\xff\xfe"}', "is not UTF-8 encoded JSON"),
    ("nested too deeply", b'{"schoolId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ("a number too large", b'{"schoolId": 1' + b"0" * 5000 + b"}", "a number too large"),
]


@pytest.mark.parametrize(("case", "body", "says"), UNREADABLE, ids=[b[0] for b in UNREADABLE])
def test_an_unreadable_body_is_a_400_that_says_why(
    api: Api, store: Store, case: str, body: bytes, says: str
) -> None:
    headers = {**api.auth("provider", PROVIDER), "content-type": "application/json"}

    response = api.client.post("/v1/lessons/requests", content=body, headers=headers)

    problem = assert_problem(response, 400)
    assert problem["errors"] == [{"field": "body", "message": problem["errors"][0]["message"]}]
    assert says in problem["detail"], problem["detail"]
    assert store.count_events() == 0


@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_4xx_problem_naming_what_was_wrong_and_writes_nothing(
    api: Api, store: Store, case: str, body: bytes, status: int
) -> None:
    api.client.post("/v1/lessons/requests", json=lesson(), headers=api.auth("admin"))
    written = store.count_events()
    headers = {**api.auth("provider", PROVIDER), "content-type": "application/json"}

    response = api.client.post("/v1/lessons/requests", content=body, headers=headers)

    problem = assert_problem(response, status)
    assert problem["errors"], case
    assert all(error["field"] and error["message"] for error in problem["errors"])
    assert store.count_events() == written


NOT_JSON_TYPES = [
    ("application/x-www-form-urlencoded", "it came as 'application/x-www-form-urlencoded'"),
    ("text/plain", "it came as 'text/plain'"),
    (None, "it came without one"),
]


@pytest.mark.parametrize(("content_type", "says"), NOT_JSON_TYPES)
@pytest.mark.parametrize("path", ["/v1/lessons/requests", "/v1/lessons/requests/batch"])
def test_a_json_body_sent_as_another_type_is_a_415_saying_so(
    api: Api, store: Store, path: str, content_type: str | None, says: str
) -> None:
    body = lesson() if path.endswith("requests") else {"lessons": [lesson()]}
    headers = api.auth("provider", PROVIDER)
    if content_type is not None:
        headers["content-type"] = content_type

    # curl's -d without -H 'Content-Type: application/json': it was a 422 saying "body:
    # Input should be a valid dictionary or object to extract fields from".
    response = api.client.post(path, content=json.dumps(body), headers=headers)

    problem = assert_problem(response, 415)
    message = f"send it as JSON, with Content-Type: application/json ({says})"
    assert problem["errors"] == [{"field": "body", "message": message}]
    assert store.count_events() == 0
    sent = api.client.post(path, json=body, headers=api.auth("provider", PROVIDER))
    assert sent.status_code in (200, 201), sent.text


def test_a_body_over_1_mib_is_413(api: Api) -> None:
    headers = {**api.auth("provider", PROVIDER), "content-type": "application/json"}
    big = b'{"schoolId": "' + b"s" * (1024 * 1024) + b'"}'
    assert_problem(api.client.post("/v1/lessons/requests", content=big, headers=headers), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"schoolId": "'
        for _ in range(20):
            yield b"s" * 65536
        yield b'"}'

    streamed = api.client.post("/v1/lessons/requests", content=chunks(), headers=headers)
    assert_problem(streamed, 413)


def test_no_token_or_a_bad_token_is_401(api: Api) -> None:
    assert_problem(api.client.post("/v1/lessons/requests", json=lesson()), 401)
    bad = {"Authorization": "Bearer llt_0000_nope"}
    response = api.client.post("/v1/lessons/requests", json=lesson(), headers=bad)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_401(api: Api) -> None:
    token, text = api.app.state.tokens.create("admin")
    headers = {"Authorization": f"Bearer {text}"}
    body = lesson(providerId=PROVIDER)
    assert api.client.post("/v1/lessons/requests", json=body, headers=headers).is_success
    api.app.state.tokens.revoke(token.token_id)
    assert_problem(api.client.post("/v1/lessons/requests", json=body, headers=headers), 401)


@pytest.mark.parametrize("cache_seconds", [0.5, 0.0])
def test_a_token_revoked_by_another_process_is_refused_within_the_cache_time(
    store: Store, cache_seconds: float
) -> None:
    """`lesson-ledger tokens revoke` runs in a process of its own: a server that checked
    the token a moment ago remembers it for `token_cache_seconds` (no database read per
    request), then refuses it; with 0 it refuses it at once."""
    with served(store.url, token_cache_seconds=cache_seconds) as api:
        token, text = api.app.state.tokens.create("admin")
        headers = {"Authorization": f"Bearer {text}"}
        body = lesson(providerId=PROVIDER)
        assert api.client.post("/v1/lessons/requests", json=body, headers=headers).is_success
        sql = SqlStore(Database.from_url(store.url))  # the CLI's own connection
        try:
            assert TokenStore(sql).revoke(token.token_id)
        finally:
            sql.close()
        remembered = api.client.get("/v1/lessons", headers=headers).status_code
        assert remembered == (200 if cache_seconds else 401)
        deadline = time.monotonic() + cache_seconds + 5
        while (status := api.client.get("/v1/lessons", headers=headers).status_code) != 401:
            assert status == 200 and time.monotonic() < deadline, status
            time.sleep(0.05)
        assert_problem(api.client.post("/v1/lessons/requests", json=body, headers=headers), 401)


def test_roles_outside_their_work_are_403(api: Api) -> None:
    worker = api.auth("worker")
    assert_problem(api.client.post("/v1/lessons/requests", json=lesson(), headers=worker), 403)
    created = api.client.post(
        "/v1/lessons/requests", json=lesson(), headers=api.auth("provider", PROVIDER)
    ).json()
    generation = {"attempt": 1, "content": {"lesson": {}}, "model": "m"}
    response = api.client.post(
        f"/v1/lessons/{created['lesson_id']}/generation",
        json=generation,
        headers=api.auth("provider", PROVIDER),
    )
    assert_problem(response, 403)


def test_a_provider_token_acts_only_for_its_own_provider(api: Api) -> None:
    mine = api.auth("provider", PROVIDER)
    theirs = api.auth("provider", OTHER_PROVIDER)
    body = lesson(providerId=OTHER_PROVIDER.upper())
    assert_problem(api.client.post("/v1/lessons/requests", json=body, headers=mine), 403)
    created = api.client.post("/v1/lessons/requests", json=lesson(), headers=mine).json()
    lesson_id = created["lesson_id"]

    foreign = [
        api.client.post(
            f"/v1/lessons/{lesson_id}/cancellation", json={"requestId": "c"}, headers=theirs
        ),
        api.client.post(
            f"/v1/lessons/{lesson_id}/regeneration", json={"requestId": "g"}, headers=theirs
        ),
        api.client.get(f"/v1/lessons/{lesson_id}/history", headers=theirs),
    ]
    unknown_id = uuid4()
    unknown = [
        api.client.post(
            f"/v1/lessons/{unknown_id}/cancellation", json={"requestId": "c"}, headers=theirs
        ),
        api.client.post(
            f"/v1/lessons/{unknown_id}/regeneration", json={"requestId": "g"}, headers=theirs
        ),
        api.client.get(f"/v1/lessons/{unknown_id}/history", headers=theirs),
    ]

    for other, missing in zip(foreign, unknown, strict=True):
        # Another provider's lesson and no lesson at all look the same: no existence leak.
        assert_problem(other, 403)
        assert_problem(missing, 403)
        other_body, missing_body = other.json(), missing.json()
        other_body.pop("request_id"), missing_body.pop("request_id")
        assert other_body["title"] == missing_body["title"]
        assert other_body["type"] == missing_body["type"]


def test_generation_failure_and_their_replays_and_stale_answers(api: Api) -> None:
    provider, worker = api.auth("provider", PROVIDER), api.auth("worker")
    lesson_id = api.client.post("/v1/lessons/requests", json=lesson(), headers=provider).json()[
        "lesson_id"
    ]
    result = {"attempt": 1, "content": {"lesson": {"title": "x"}}, "model": "template"}

    first = api.client.post(f"/v1/lessons/{lesson_id}/generation", json=result, headers=worker)
    again = api.client.post(f"/v1/lessons/{lesson_id}/generation", json=result, headers=worker)
    regen = api.client.post(
        f"/v1/lessons/{lesson_id}/regeneration",
        json={"requestId": "regen-1", "reason": "too easy"},
        headers=provider,
    )
    stale = api.client.post(f"/v1/lessons/{lesson_id}/generation", json=result, headers=worker)
    failed = api.client.post(
        f"/v1/lessons/{lesson_id}/failure",
        json={"attempt": 2, "reason": "model timed out"},
        headers=worker,
    )

    assert (first.status_code, first.json()["outcome"]) == (201, "accepted")
    assert (again.status_code, again.json()["outcome"]) == (200, "replayed")
    assert (regen.status_code, regen.json()["attempt"]) == (201, 2)
    assert "stale" in assert_problem(stale, 409)["type"]
    assert (failed.status_code, failed.json()["attempt"]) == (201, 2)


def test_cancel_then_request_again(api: Api) -> None:
    provider = api.auth("provider", PROVIDER)
    lesson_id = api.client.post("/v1/lessons/requests", json=lesson(), headers=provider).json()[
        "lesson_id"
    ]
    cancel = {"requestId": "cancel-1", "reason": "school closed"}

    cancelled = api.client.post(
        f"/v1/lessons/{lesson_id}/cancellation", json=cancel, headers=provider
    )
    replayed = api.client.post(
        f"/v1/lessons/{lesson_id}/cancellation", json=cancel, headers=provider
    )
    conflict = api.client.post(
        f"/v1/lessons/{lesson_id}/cancellation", json={"requestId": "cancel-2"}, headers=provider
    )
    again = api.client.post("/v1/lessons/requests", json=lesson(request_id="r-2"), headers=provider)

    assert cancelled.status_code == 201
    assert replayed.status_code == 200
    assert_problem(conflict, 409)
    assert (again.status_code, again.json()["attempt"], again.json()["lesson_id"]) == (
        201,
        2,
        lesson_id,
    )


def test_unknown_lessons_are_404_for_admin_and_worker(api: Api) -> None:
    unknown = uuid4()
    result = {"attempt": 1, "content": {"lesson": {}}, "model": "m"}
    for path, body, role in [
        (f"/v1/lessons/{unknown}/generation", result, "worker"),
        (f"/v1/lessons/{unknown}/failure", {"attempt": 1, "reason": "x"}, "worker"),
        (f"/v1/lessons/{unknown}/regeneration", {"requestId": "g"}, "admin"),
        (f"/v1/lessons/{unknown}/cancellation", {"requestId": "c"}, "admin"),
    ]:
        assert_problem(api.client.post(path, json=body, headers=api.auth(role)), 404)
    history = api.client.get(f"/v1/lessons/{unknown}/history", headers=api.auth("admin"))
    assert_problem(history, 404)
    assert_problem(api.client.get("/v1/lessons/not-a-uuid/history", headers=api.auth("admin")), 422)


def test_history_shows_events_and_rejected_attempts_as_they_were(api: Api) -> None:
    provider = api.auth("provider", PROVIDER)
    lesson_id = api.client.post("/v1/lessons/requests", json=lesson(), headers=provider).json()[
        "lesson_id"
    ]
    api.client.post("/v1/lessons/requests", json=lesson(request_id="late"), headers=provider)
    api.client.post(
        f"/v1/lessons/{lesson_id}/cancellation", json={"requestId": "c"}, headers=provider
    )

    now = api.client.get(f"/v1/lessons/{lesson_id}/history", headers=provider)
    then = api.client.get(
        f"/v1/lessons/{lesson_id}/history", params={"as_of_version": 2}, headers=provider
    )

    assert now.status_code == 200
    entries = now.json()["entries"]
    assert [(e["version"], e["event"]) for e in entries] == [
        (1, "OpenedByRequest"),
        (2, "RequestRejected"),
        (3, "LessonCancelled"),
    ]
    assert (entries[1]["request_id"], entries[1]["changes"]["reason"]) == ("late", "conflict")
    assert now.json()["state"]["status"] == "cancelled"
    assert [e["event"] for e in then.json()["entries"]] == ["OpenedByRequest", "RequestRejected"]
    assert then.json()["state"]["status"] == "requested"
    assert "students" not in now.json()["state"]


def test_the_calendar_batch_is_taken_as_sent_and_its_key_replays(api: Api, store: Store) -> None:
    provider = {**api.auth("provider", PROVIDER), "Idempotency-Key": "week-36-try-1"}
    body = calendar_batch("08:30-09:00", "9:30-10:00", "structured", "08:30 - 09:00")

    first = api.client.post("/v1/lessons/requests/batch", json=body, headers=provider)
    written = store.count_events()
    again = api.client.post("/v1/lessons/requests/batch", json=body, headers=provider)
    changed = api.client.post(
        "/v1/lessons/requests/batch", json=calendar_batch("11:00-11:30"), headers=provider
    )

    assert first.status_code == 200
    result = first.json()
    assert [item["outcome"] for item in result["items"]] == [
        "accepted",
        "accepted",
        "invalid",
        "duplicate_in_batch",
    ]
    assert result["items"][2]["error"]["errors"][0]["field"] == "time_slot"
    assert result["summary"]["accepted"] == 2
    assert (again.status_code, again.json()) == (200, result)
    assert store.count_events() == written
    assert "Idempotency-Key" in assert_problem(changed, 422)["detail"]


def test_the_ledger_batch_shape_partial_and_atomic(api: Api, store: Store) -> None:
    admin = api.auth("admin")
    held = lesson(slot="12:00-12:30", request_id="holder", providerId=PROVIDER)
    api.client.post("/v1/lessons/requests", json=held, headers=admin)
    items = [
        {**lesson(slot=f"{h:02d}:00-{h:02d}:30", request_id=f"b-{h}"), "providerId": PROVIDER}
        for h in range(13, 17)
    ]
    written = store.count_events()

    atomic = api.client.post(
        "/v1/lessons/requests/batch",
        json={"lessons": [*items, {**held, "requestId": "late"}], "mode": "atomic"},
        headers=admin,
    )
    assert store.count_events() == written
    partial = api.client.post(
        "/v1/lessons/requests/batch",
        json={"lessons": items, "mode": "partial", "batchId": "b-1"},
        headers=admin,
    )

    problem = assert_problem(atomic, 409)
    assert [item["outcome"] for item in problem["items"]] == ["aborted"] * 4 + ["conflict"]
    assert partial.status_code == 200
    assert partial.json()["summary"]["accepted"] == 4
    assert partial.json()["batch_id"] == "b-1"


def test_a_batch_over_500_items_is_422_saying_the_limit(api: Api) -> None:
    items = [
        {**lesson(request_id=f"r-{i}"), "providerId": PROVIDER, "details": None} for i in range(501)
    ]
    response = api.client.post(
        "/v1/lessons/requests/batch", json={"lessons": items}, headers=api.auth("admin")
    )
    assert "at most 500" in assert_problem(response, 422)["detail"]


def test_health_ready_and_metrics(api: Api) -> None:
    api.client.post("/v1/lessons/requests", json=lesson(), headers=api.auth("provider", PROVIDER))
    assert api.client.get("/health").json() == {"status": "ok", "version": declared_version()}
    ready = api.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'lesson_ledger_commands_total{command="request",outcome="accepted"} 1.0' in metrics.text
    assert "lesson_ledger_command_seconds_bucket" in metrics.text
    assert f'lesson_ledger_build_info{{version="{declared_version()}"}} 1.0' in metrics.text


def test_openapi_and_docs_are_served(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert "/v1/lessons/requests/batch" in schema["paths"]
    assert schema["info"]["version"] == declared_version()
    assert api.client.get("/docs").status_code == 200


def test_log_lines_are_json_with_a_request_id_and_no_token(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**api.auth("provider", PROVIDER), "X-Request-ID": "trace-me-1"}
    with caplog.at_level(logging.INFO):
        response = api.client.post("/v1/lessons/requests", json=lesson(), headers=headers)

    assert response.headers["x-request-id"] == "trace-me-1"
    for unfit in ("x" * 129, "a b", "<script>", "é"):  # too long, or not plain: a new one
        other = api.client.post(
            "/v1/lessons/requests",
            json=lesson(request_id=f"r-{len(unfit)}"),
            headers={**headers, "X-Request-ID": unfit.encode()},  # type: ignore[arg-type]
        )
        assert re.fullmatch(r"[0-9a-f]{32}", other.headers["x-request-id"]), unfit
    kept = api.client.get("/health", headers={"X-Request-ID": "a" * 128})
    assert kept.headers["x-request-id"] == "a" * 128
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    ours = [line for line in lines if line.get("request_id") == "trace-me-1"]
    assert ours and ours[-1]["status"] == 201 and ours[-1]["path"] == "/v1/lessons/requests"
    token = headers["Authorization"].split()[1]
    assert all(token not in json.dumps(line) for line in lines)
    assert all("st-1" not in json.dumps(line) for line in lines)


def test_a_log_line_names_the_route_taken_never_the_path_sent(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette's own routes (the OpenAPI document, the docs, the pages' static files) are
    named as the API's are; a path no route takes is not logged as sent."""
    taken = {
        "/openapi.json": (200, "/openapi.json"),
        "/docs": (200, "/docs"),
        "/static/ledger.css": (200, "/static/{path}"),
        "/v1/student/st-1/erasure": (404, "(no route)"),
    }
    with caplog.at_level(logging.INFO):
        for number, path in enumerate(taken):
            answer = api.client.get(path, headers={"X-Request-ID": f"route-{number}"})
            assert answer.status_code == taken[path][0], path

        def logged() -> dict[str, str] | None:
            # A line is written once the response is sent: the client may see it first.
            lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
            paths = {
                line["request_id"]: line["path"]
                for line in lines
                if line.get("message") == "request"
                and str(line.get("request_id")).startswith("route-")
            }
            return paths if len(paths) == len(taken) else None

        paths = wait_until(logged, timeout=10, what="a log line for each request")
    assert [paths[f"route-{number}"] for number in range(len(taken))] == [
        route for _, route in taken.values()
    ]


def test_a_log_line_is_one_json_object_whatever_its_fields_hold() -> None:
    """orjson writes the lines; what it cannot encode (a key that is not a string, an
    integer beyond 64 bits) still makes one JSON line, never a logging error."""
    record = logging.makeLogRecord(
        {"name": "t", "levelname": "INFO", "msg": "odd", "big": 2**70, "by_number": {1: "a"}}
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["message"], entry["big"], entry["by_number"]) == ("odd", 2**70, {"1": "a"})


def test_a_log_line_holds_no_terminal_colour_codes() -> None:
    """uvicorn adds a coloured copy of its messages (`color_message`): left out, so a JSON
    line never carries escape codes."""
    record = logging.makeLogRecord({
        "name": "uvicorn.error",
        "levelname": "INFO",
        "msg": "Started server process [%d]",
        "args": (42,),
        "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
    })  # fmt: skip
    line = JsonFormatter().format(record)
    assert json.loads(line)["message"] == "Started server process [42]"
    assert "color_message" not in line and "\\u001b" not in line and "\x1b" not in line


def test_log_lines_go_to_the_standard_error_of_the_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line goes to `sys.stderr` as it is when written: one set up before the stream was
    replaced (and the old one closed, as a test's capture is) writes to the new one, and
    logging reports no error."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = CurrentStderr()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lesson_ledger.test_stderr")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("before")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["after"]
    assert "Logging error" not in second.getvalue()
