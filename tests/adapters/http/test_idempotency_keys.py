"""`Idempotency-Key` as clients make it, on both request endpoints: whatever an HTTP
header carries (visible characters, spaces and tabs between) up to 1,024 characters; the
ids derived from it with the ledger's keyed hash; the key itself never stored, logged or
echoed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from adapters.http.idempotency import IdempotencyKey
from adapters.keys.keyed_ids import KeyedIds
from adapters.logs import JsonFormatter
from tests.support.http import PROVIDER, assert_problem, calendar_batch, lesson
from tests.support.served import Api, served
from tests.support.stores import Store

KEY_ID = re.compile(r"k-[a-z2-7]{32}")
ENDPOINTS = {
    "single": ("/v1/lessons/requests", {k: v for k, v in lesson().items() if k != "requestId"}),
    "batch": ("/v1/lessons/requests/batch", calendar_batch("08:30-09:00")),
}


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    with served(store.url) as running:
        yield running


BAD_KEYS: list[tuple[str, str, str]] = [
    ("1,025 characters", "k" * 1025, "must be at most 1024 characters, not 1025"),
    ("empty", "", "must not be empty"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("case", "key", "message"), BAD_KEYS, ids=[b[0] for b in BAD_KEYS])
def test_an_empty_key_or_one_over_1024_characters_is_422_naming_it(
    api: Api, store: Store, endpoint: str, case: str, key: str, message: str
) -> None:
    path, body = ENDPOINTS[endpoint]
    headers = [
        ("Authorization", api.auth("provider", PROVIDER)["Authorization"]),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", key.encode("latin-1")),
    ]
    # Values as bytes, as a browser sends them: httpx takes them, its types do not.
    response = api.client.post(path, content=json.dumps(body), headers=headers)  # type: ignore[arg-type]

    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["field"] == "Idempotency-Key" and message in error["message"], case
    assert store.count_events() == 0
    if len(key) > 3:
        assert key not in response.text


CARRIED = "".join(chr(code) for code in [*range(0x20, 0x7F), *range(0x80, 0x100)]) + "\t"
"""Every character a key may hold: visible ASCII, every byte from 0x80 (as Starlette reads
a header: Latin-1, one character a byte), space and tab."""


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_character_a_header_carries_and_1024_of_them_make_a_key(
    api: Api, endpoint: str
) -> None:
    path, body = ENDPOINTS[endpoint]
    key = ("k" + CARRIED * 6)[:1023] + "k"  # HTTP trims spaces around a value
    headers = [
        *api.auth("provider", PROVIDER).items(),
        ("Idempotency-Key", key.encode("latin-1")),  # as a browser sends it
    ]

    first = api.client.post(path, json=body, headers=headers)  # type: ignore[arg-type]
    again = api.client.post(path, json=body, headers=headers)  # type: ignore[arg-type]

    assert first.status_code in (200, 201), first.text
    assert again.status_code == 200, again.text
    if endpoint == "single":
        assert (first.json()["outcome"], again.json()["outcome"]) == ("accepted", "replayed")
    else:
        assert again.json() == first.json() and KEY_ID.fullmatch(first.json()["batch_id"])


@pytest.mark.parametrize("character", ["\x00", "\x1f", "\x7f", "\r"])
def test_a_control_character_the_server_let_through_is_still_refused(character: str) -> None:
    checked = TypeAdapter(IdempotencyKey)  # uvicorn refuses these with a 400 before us

    with pytest.raises(ValidationError) as refused:
        checked.validate_python(f"od:{character}x")

    assert "character 4 is a control character" in str(refused.value)
    assert checked.validate_python("od:2025-09-12:Phonics review\twith caf\u00c3\u00a9") is not None


def test_a_single_request_takes_its_id_from_the_key_and_both_must_agree(
    api: Api, store: Store
) -> None:
    provider = api.auth("provider", PROVIDER)
    key = "cw:slot:2025-09-08:08:30-09:00:st-1-st-2"
    body = {k: v for k, v in lesson().items() if k != "requestId"}

    made = api.client.post(
        "/v1/lessons/requests", json=body, headers={**provider, "Idempotency-Key": key}
    )
    derived = api.client.get(
        f"/v1/lessons/{made.json()['lesson_id']}/history", headers=provider
    ).json()["entries"][0]["request_id"]
    disagree = api.client.post(
        "/v1/lessons/requests",
        json={**body, "requestId": "another"},
        headers={**provider, "Idempotency-Key": key},
    )
    agree = api.client.post(
        "/v1/lessons/requests",
        json={**body, "requestId": derived},
        headers={**provider, "Idempotency-Key": key},
    )
    same_text = api.client.post(
        "/v1/lessons/requests",
        json={**lesson(slot="10:00-10:30"), "requestId": "plain-1"},
        headers={**provider, "Idempotency-Key": "plain-1"},
    )
    missing = api.client.post("/v1/lessons/requests", json=body, headers=provider)

    assert made.status_code == 201 and KEY_ID.fullmatch(derived)
    problem = assert_problem(disagree, 422)
    assert {error["field"] for error in problem["errors"]} == {"request_id", "Idempotency-Key"}
    assert key not in disagree.text
    assert (agree.status_code, agree.json()["outcome"]) == (200, "replayed")
    assert same_text.status_code == 201  # the body's id is the key: they agree
    assert assert_problem(missing, 422)["errors"] == [
        {"field": "request_id", "message": "is missing"}
    ]
    assert store.count_events() == 2


def test_ids_derive_from_the_key_with_the_ledgers_own_hash_key(api: Api) -> None:
    key = "cw:batch:2025-09-08:2:08:30-09:00,09:00-09:30"
    headers = {**api.auth("provider", PROVIDER), "Idempotency-Key": key}
    answer = api.client.post(
        "/v1/lessons/requests/batch",
        json=calendar_batch("08:30-09:00", "09:00-09:30"),
        headers=headers,
    ).json()

    ids: KeyedIds = api.app.state.keyed_ids
    assert answer["batch_id"] == ids.derive(key)
    assert KeyedIds(b"another key of 32 bytes, or more").derive(key) != ids.derive(key)
    assert ids.derive(key + " ") != ids.derive(key)


def test_a_key_stored_as_sent_by_the_previous_release_never_matches(api: Api, store: Store) -> None:
    key = "cw:batch:2025-09-08:1:08:30-09:00"
    legacy = {"batch_id": key, "mode": "partial", "written": True, "items": [], "summary": {}}
    table = api.app.state.idempotency.table
    api.app.state.idempotency.sql.run(
        f"INSERT INTO {table} (scope, key, body_hash, status, response, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (PROVIDER, key, "0" * 64, 200, json.dumps(legacy), datetime.now(UTC).isoformat()),
    )
    headers = {**api.auth("provider", PROVIDER), "Idempotency-Key": key}

    first = api.client.post(
        "/v1/lessons/requests/batch", json=calendar_batch("08:30-09:00"), headers=headers
    )
    again = api.client.post(
        "/v1/lessons/requests/batch", json=calendar_batch("08:30-09:00"), headers=headers
    )

    assert first.status_code == 200 and first.json()["summary"]["accepted"] == 1
    assert again.json() == first.json()
    rows = sorted(row[0] for row in store.query(f"SELECT key FROM {table}"))
    assert rows == sorted([key, first.json()["batch_id"]])  # the old row as it was, untouched


def test_no_key_is_stored_logged_or_echoed(
    api: Api, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    provider = api.auth("provider", PROVIDER)
    keys = [f"cw:slot:2025-09-08:{h:02d}:00-{h:02d}:30:student-{h}" for h in (10, 11)]
    with caplog.at_level(logging.DEBUG):
        answers = [
            api.client.post(
                "/v1/lessons/requests",
                json={**lesson(slot=f"{h:02d}:00-{h:02d}:30"), "requestId": None, "schoolId": s},
                headers={**provider, "Idempotency-Key": key},
            )
            for h, key, s in [(10, keys[0], "school-1"), (11, keys[1], None)]
        ]
        batch = api.client.post(
            "/v1/lessons/requests/batch",
            json=calendar_batch("12:00-12:30", "structured"),
            headers={**provider, "Idempotency-Key": "cw:batch:2025-09-08:2:12:00-12:30,structured"},
        )
    keys.append("cw:batch:2025-09-08:2:12:00-12:30,structured")

    assert [a.status_code for a in answers] == [201, 422] and batch.status_code == 200
    stored = store.all_text()
    logged = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for key in keys:
        assert key not in stored and key not in logged
        assert all(key not in answer.text for answer in [*answers, batch])


def test_a_bodys_fingerprint_is_a_keyed_hash() -> None:
    body = b'{"batch": [{"students": [{"id": "st-1", "grade": -2}]}]}'
    ours, theirs = KeyedIds(b"k" * 32), KeyedIds(b"K" * 32)
    assert ours.fingerprint(body) == ours.fingerprint(body) != theirs.fingerprint(body)
    assert ours.fingerprint(body) != hashlib.sha256(body).hexdigest()
