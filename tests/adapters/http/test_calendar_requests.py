"""The calendar front end's own requests (tests/support/calendar_requests.json), bodies and
headers exactly as its code builds them, replayed through a real server on SQLite and
PostgreSQL: each gets its documented answer and writes what it says, and no key it sent
is kept, logged or echoed."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.logs import JsonFormatter
from tests.support.served import served
from tests.support.stores import Store

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "support" / "calendar_requests.json").read_text()
)
KEY_ID = re.compile(r"k-[a-z2-7]{32}")
"""An id derived from a client's key (adapters/keys/keyed_ids.py)."""


def test_every_request_the_calendar_sends_gets_its_documented_answer(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    answers: dict[str, httpx.Response] = {}
    with caplog.at_level(logging.INFO), served(store.url) as api:
        provider = api.auth("provider", FIXTURE["provider_id"])
        for entry in FIXTURE["requests"]:
            before = store.count_events()
            response = api.client.request(
                entry["method"],
                entry["path"],
                content=json.dumps(entry["body"]),
                headers={**as_sent(entry["headers"]), **provider},  # type: ignore[arg-type]
            )
            check(entry, response, answers)
            assert store.count_events() - before == entry["writes"], entry["name"]
            answers[entry["name"]] = response
        kinds = {
            entry["name"]: lesson_state(api, answers[entry["name"]], provider)
            for entry in FIXTURE["requests"]
            if "kind" in entry["answer"]
        }
        stored = store.all_text()

    assert answers["day of two slots"].json()["batch_id"] in stored  # the scan reads events
    for name, state in kinds.items():  # on-demand: no slot, the request's own place
        request_id = state["request_id"]
        assert KEY_ID.fullmatch(request_id), name
        assert (state["kind"], state["time_slot"]) == ("on_demand", f"on-demand-{request_id}")
    keys = {entry["headers"]["Idempotency-Key"] for entry in FIXTURE["requests"]}
    logged = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for key in keys:
        assert key not in stored, f"the key {key!r} is stored as sent"
        assert key not in logged, f"the key {key!r} is logged"
        assert all(key not in answer.text for answer in answers.values())


def lesson_state(api: Any, answer: httpx.Response, headers: dict[str, str]) -> Any:
    """The state of the lesson an answer names, from its history."""
    history = api.client.get(f"/v1/lessons/{answer.json()['lesson_id']}/history", headers=headers)
    return history.json()["state"]


def as_sent(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as a browser sends them: one byte a character (Latin-1)."""
    return {name: value.encode("latin-1") for name, value in headers.items()}


def check(
    entry: dict[str, Any], response: httpx.Response, earlier: dict[str, httpx.Response]
) -> None:
    """The response is the answer the fixture documents for the entry."""
    name, answer = entry["name"], entry["answer"]
    assert response.status_code == answer["status"], (name, response.text)
    body = response.json()
    if "same_as" in answer:
        assert body == earlier[answer["same_as"]].json(), name
    if "outcomes" in answer:
        assert [item["outcome"] for item in body["items"]] == answer["outcomes"], name
        assert KEY_ID.fullmatch(body["batch_id"]), name
    for index, fields in enumerate(answer.get("item_fields", [])):
        error = body["items"][index]["error"]
        named = [e["field"] for e in error["errors"]] if error else []
        assert named == fields, (name, index, error)
    if "outcome" in answer:
        assert body["outcome"] == answer["outcome"], name
    if "same_lesson_as" in answer:
        assert body["lesson_id"] == earlier[answer["same_lesson_as"]].json()["lesson_id"], name
    if "fields" in answer:
        assert sorted(e["field"] for e in body["errors"]) == sorted(answer["fields"]), name
    if "holder_request_of" in answer:
        holder = earlier[answer["holder_request_of"]].json()
        assert body["holder"]["request_id"] == f"{holder['batch_id']}-0", name


def test_a_day_of_twelve_slots_is_one_batch_and_its_retry_writes_nothing(store: Store) -> None:
    entries = {entry["name"]: entry for entry in FIXTURE["requests"]}
    day = entries["day of twelve slots"]
    key = day["headers"]["Idempotency-Key"]
    assert len(key) > 128 and "," in key  # what the ledger refused before
    with served(store.url) as api:
        provider = api.auth("provider", FIXTURE["provider_id"])
        headers = {**day["headers"], **provider}
        first = api.client.post(day["path"], json=day["body"], headers=headers)
        events = store.count_events()
        again = [api.client.post(day["path"], json=day["body"], headers=headers) for _ in range(3)]
        position = max(item["position"] for item in first.json()["items"])
        listed = api.client.get(
            "/v1/lessons", params={"min_position": position, "limit": 50}, headers=provider
        ).json()["items"]

    assert first.status_code == 200 and first.json()["summary"]["accepted"] == 12
    assert events == 12
    assert all(retry.status_code == 200 and retry.json() == first.json() for retry in again)
    assert store.count_events() == events
    batch_id = first.json()["batch_id"]
    assert {row["request_id"] for row in listed} == {f"{batch_id}-{i}" for i in range(12)}
