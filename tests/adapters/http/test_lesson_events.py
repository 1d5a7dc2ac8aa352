"""The live event stream `GET /v1/lessons/events` through real HTTP, on SQLite and
PostgreSQL: each change of the read model's rows with its position as the event id, a
provider's own lessons only, and resumption with `Last-Event-ID` after the server was
stopped and started again: every change since, none twice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from uuid import UUID

import httpx
import pytest

from adapters.eventstore import event_log
from domain import LessonLedger, lesson_id_for
from projections.lessons import fold
from tests.support.http import OTHER_PROVIDER, PROVIDER, assert_problem, lesson
from tests.support.served import Api, served
from tests.support.sse import Event, events, read_until
from tests.support.stores import Store

DATE = "2025-09-08"


def slot_id(slot: str, provider: str = PROVIDER) -> UUID:
    return lesson_id_for(provider, "school-1", DATE, slot)


def expected_changes(store: Store, after: int, provider: str) -> list[tuple[int, str, str]]:
    """(position, event, status) of every change after `after` of the provider's rows, as
    the log folds them: what the stream must send, in order."""
    ledger = store.open()
    rows: dict[UUID, Any] = {}
    found = []
    for page in event_log(ledger).pages(after=0):
        for position, event in zip(page.ids, page.events, strict=True):
            row = rows[event.originator_id] = fold(rows.get(event.originator_id), event)
            if position > after and row.provider_id == provider:
                found.append((position, type(event).__name__, row.status))
    return found


def stream(api: Api, token: dict[str, str], **params: Any) -> Any:
    return api.client.stream(
        "GET", "/v1/lessons/events", params=params, headers=token, timeout=httpx.Timeout(20)
    )


def changes(seen: list[Event]) -> list[tuple[int, str, str]]:
    return [
        (int(e.id or 0), e.data["event"], e.data["lesson"]["status"])
        for e in seen
        if e.name == "lesson"
    ]


def generate(ledger: LessonLedger, slot: str, attempt: int = 1) -> None:
    content = {"lesson": {"title": f"lesson at {slot}"}, "worksheet": {}, "metadata": {}}
    ledger.record_generation(lesson_id=slot_id(slot), attempt=attempt, content=content, model="m")


def request(api: Api, slot: str, request_id: str, provider: str = PROVIDER) -> httpx.Response:
    return api.client.post(
        "/v1/lessons/requests",
        json=lesson(slot=slot, request_id=request_id, lessonDate=DATE),
        headers=api.auth("provider", provider),
    )


def test_a_client_resuming_after_a_restart_gets_every_change_since_and_none_twice(
    store: Store,
) -> None:
    with served(store.url) as api:
        mine = api.auth("provider", PROVIDER)
        assert request(api, "08:30-09:00", "a-1").status_code == 201
        with stream(api, mine, after=0) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            live = events(response)
            first = read_until(live, lambda seen: seen[0].name == "ready", 10, "ready")
            assert first[0].id == "0"
            # Changes made while the client listens arrive live, each once.
            assert request(api, "08:30-09:00", "a-2").status_code == 409  # turned away
            assert request(api, "09:00-09:30", "a-3").status_code == 201
            assert request(api, "09:00-09:30", "b-1", OTHER_PROVIDER).status_code == 201
            expected = expected_changes(store, 0, PROVIDER)
            seen = read_until(
                live, lambda seen: len(changes(seen)) >= len(expected), 20, "the live changes"
            )
        assert changes(seen) == expected
        assert [e[1:] for e in expected] == [
            ("OpenedByRequest", "requested"),
            ("RequestRejected", "requested"),
            ("OpenedByRequest", "requested"),
        ]
        last_seen = seen[-1].id
        token = api.tokens[f"provider:{PROVIDER}"]
    assert last_seen is not None

    # The server is down: the lessons change meanwhile (a worker, another writer).
    ledger = store.open()
    generate(ledger, "08:30-09:00")
    ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-1",
        lesson_date=DATE,
        time_slot="10:00-10:30",
        request_id="a-4",
        actor="bob",
        details={"students": [{"id": "st-1", "grade": 2}], "subject": "Math"},
    )
    ledger.cancel(
        lesson_id=slot_id("09:00-09:30"), request_id="a-5", actor="bob", reason="sick day"
    )

    with served(store.url) as api:  # a new server process on the same database
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": last_seen}
        expected = expected_changes(store, int(last_seen), PROVIDER)
        assert [e[1:] for e in expected] == [
            ("LessonGenerated", "generated"),
            ("OpenedByRequest", "requested"),
            ("LessonCancelled", "cancelled"),
        ]
        with stream(api, headers) as response:
            assert response.status_code == 200
            live = events(response)
            seen = read_until(
                live, lambda seen: len(changes(seen)) >= len(expected), 20, "the changes since"
            )
            assert seen[0].name == "ready" and seen[0].id == last_seen
            assert changes(seen) == expected
            # And live again after the catch-up, still once each.
            generate(store.open(), "10:00-10:30")
            more = read_until(live, lambda seen: bool(changes(seen)), 20, "a live change")
        assert changes(more) == expected_changes(store, expected[-1][0], PROVIDER)
        assert changes(more)[0][1:] == ("LessonGenerated", "generated")
        positions = [p for p, _, _ in changes(seen) + changes(more)]
        assert positions == sorted(set(positions))  # in order, none twice


def test_a_change_carries_the_row_as_the_api_reads_it(store: Store) -> None:
    with served(store.url) as api:
        mine = api.auth("provider", PROVIDER)
        created = request(api, "08:30-09:00", "a-1").json()
        generate(store.open(), "08:30-09:00")
        with stream(api, mine, after=0) as response:
            seen = read_until(events(response), lambda s: len(changes(s)) >= 2, 20, "changes")
        row = api.client.get(f"/v1/lessons/{created['lesson_id']}", headers=mine).json()
    generated = [e for e in seen if e.name == "lesson"][-1]
    assert generated.data["lesson"] == row
    assert generated.data["lesson"]["content"]["lesson"]["title"] == "lesson at 08:30-09:00"
    assert generated.data["position"] == int(generated.id or 0)


@pytest.fixture
def api(tmp_path: Any) -> Iterator[Api]:
    with served(f"sqlite:///{tmp_path / 'ledger.db'}") as running:
        yield running


def test_a_provider_follows_its_own_lessons_only(api: Api) -> None:
    mine = api.auth("provider", PROVIDER)
    response = api.client.get(
        "/v1/lessons/events", params={"provider_id": OTHER_PROVIDER}, headers=mine
    )
    assert_problem(response, 403)


def test_the_stream_needs_a_bearer_token(api: Api) -> None:
    assert_problem(api.client.get("/v1/lessons/events"), 401)


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"after": "x"}, {}, "after"),
        ({"after": "99"}, {}, "after"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "99"}, "Last-Event-ID"),
        ({"provider_id": "nope"}, {}, "provider_id"),
        ({"school_id": " "}, {}, "school_id"),
    ],
)
def test_a_bad_start_or_filter_is_422_naming_it(
    api: Api, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    response = api.client.get(
        "/v1/lessons/events", params=params, headers={**api.auth("admin"), **headers}
    )
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == [field]


def test_streams_at_one_position_read_each_page_of_the_log_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many browsers follow the same lessons: a change is read from the log once for all
    of a server process's streams, not once a stream."""
    with served(store.url) as api:
        mine = api.auth("provider", PROVIDER)
        first = request(api, "08:30-09:00", "a-1")
        assert first.status_code == 201
        caught_up = api.client.get(
            "/v1/lessons", params={"min_position": first.json()["position"]}, headers=mine
        )
        assert caught_up.status_code == 200  # every stream starts at this position
        log = api.app.state.read_model.log
        reads: list[tuple[int, int | None]] = []
        read_page = log.page

        def counted(after: int, upto: int | None = None, page_size: int = 200) -> Any:
            reads.append((after, upto))
            return read_page(after, upto, page_size)

        monkeypatch.setattr(log, "page", counted)
        with ExitStack() as streams:
            lives = []
            for _ in range(5):
                live = events(streams.enter_context(stream(api, mine)))
                read_until(live, lambda seen: seen[0].name == "ready", 10, "ready")
                lives.append(live)
            second = request(api, "09:00-09:30", "a-2")
            assert second.status_code == 201
            seen = [
                read_until(live, lambda seen: seen[-1].name == "lesson", 10, "the change")[-1]
                for live in lives
            ]
        assert {e.id for e in seen} == {str(second.json()["position"])}
        assert reads == [(first.json()["position"], second.json()["position"])]
