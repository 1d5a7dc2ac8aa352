"""JWTs of the product's sign-in as bearer tokens, through the real HTTP server, with keys
made by the test and a JWKS document it serves on loopback (tests/support/jwks.py)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.auth.settings import JwtSettings
from adapters.storage.database import Database
from adapters.storage.page_sessions import PageSessions
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import ApiToken, TokenStore
from tests.support.command_line import cli
from tests.support.http import assert_problem, calendar_batch, lesson
from tests.support.jwks import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    claims,
    hs256,
    unsigned,
)
from tests.support.served import Api, served
from tests.support.stores import Store

ALICE = "3d1f6a2e-5b7c-4e8f-9a0b-1c2d3e4f5a6b"  # Supabase user ids are the provider ids
BOB = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.rsa("key-1")


@pytest.fixture
def idp(signing_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(signing_key) as server:
        yield server


def jwt_settings(idp: JwksServer, **changes: Any) -> JwtSettings:
    return JwtSettings(jwks_url=idp.url, issuer=ISSUER, audience=AUDIENCE, **changes)


@pytest.fixture
def api(tmp_path: Path, idp: JwksServer) -> Iterator[Api]:
    with served(f"sqlite:///{tmp_path / 'ledger.db'}", jwt=jwt_settings(idp)) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_tokens_calendar_batch_is_accepted_and_its_lessons_carry_the_subject(
    store: Store, idp: JwksServer, signing_key: SigningKey
) -> None:
    token = signing_key.sign(claims(ALICE))
    with served(store.url, jwt=jwt_settings(idp)) as api:
        headers = {
            **bearer(token),
            "Idempotency-Key": "cw:batch:2025-09-08:2:08:30-09:00,09:00-09:30",
        }
        batch = api.client.post(
            "/v1/lessons/requests/batch",
            json=calendar_batch("08:30-09:00", "09:00-09:30"),
            headers=headers,
        )
        assert batch.status_code == 200, batch.text
        items = batch.json()["items"]
        assert [item["outcome"] for item in items] == ["accepted", "accepted"]
        lesson_id, position = items[0]["lesson_id"], items[-1]["position"]
        read = api.client.get(
            f"/v1/lessons/{lesson_id}", params={"min_position": position}, headers=bearer(token)
        )
        history = api.client.get(f"/v1/lessons/{lesson_id}/history", headers=bearer(token))

    assert read.status_code == 200, read.text
    assert (read.json()["provider_id"], read.json()["requested_by"]) == (ALICE, ALICE)
    entry = history.json()["entries"][0]
    assert (entry["actor"], entry["source"]) == (ALICE, "api-jwt")
    assert "someone@example.org" not in store.all_text()  # nothing from a token but its subject
    exported = [
        json.loads(line) for line in cli("export", database_url=store.url).stdout.splitlines()
    ]
    assert {(line["actor"], line["source"]) for line in exported} == {(ALICE, "api-jwt")}


def test_the_ledgers_own_tokens_keep_working_beside_jwts(api: Api) -> None:
    own = api.client.post(
        "/v1/lessons/requests", json=lesson(), headers=api.auth("provider", ALICE)
    )
    assert own.status_code == 201, own.text
    history = api.client.get(
        f"/v1/lessons/{own.json()['lesson_id']}/history", headers=api.auth("admin")
    )
    assert history.json()["entries"][0]["source"] == "api"


def refused_because(api: Api, token: str) -> str:
    """The 401's reason; the problem never echoes the token."""
    response = api.client.post("/v1/lessons/requests", json=lesson(), headers=bearer(token))
    problem = assert_problem(response, 401)
    signature = token.rsplit(".", 1)[1]
    assert token not in response.text and (not signature or signature not in response.text)
    return str(problem["detail"])


def test_tokens_that_must_not_pass_are_401_saying_why(api: Api, signing_key: SigningKey) -> None:
    impostor = SigningKey.rsa(signing_key.kid)  # same kid, another private key
    cases = {
        "expired": signing_key.sign(claims(ALICE, lifetime=-120)),
        "wrong audience": signing_key.sign(claims(ALICE, aud="another-app")),
        "wrong issuer": signing_key.sign(claims(ALICE, iss="https://evil.example/auth/v1")),
        "bad signature": impostor.sign(claims(ALICE)),
        "algorithm not allowed: none": unsigned(claims(ALICE)),
        "algorithm not allowed: HS256": hs256(
            claims(ALICE), signing_key.public_pem(), kid=signing_key.kid
        ),
        "unknown signing key": SigningKey.rsa("key-9").sign(claims(ALICE)),
        "not a UUID": signing_key.sign(claims("auth0|5f7c8ec7c33c6c004bbafe82")),
        "no 'exp' claim": signing_key.sign({k: v for k, v in claims(ALICE).items() if k != "exp"}),
    }
    reasons = {case: refused_because(api, token) for case, token in cases.items()}

    for case, reason in reasons.items():
        assert case in reason, (case, reason)


def test_an_hs256_token_signed_with_the_public_key_fails_where_a_secret_is_set_too(
    tmp_path: Path, idp: JwksServer, signing_key: SigningKey
) -> None:
    settings = jwt_settings(idp, secret=SECRET)
    with served(f"sqlite:///{tmp_path / 'ledger.db'}", jwt=settings) as api:
        forged = hs256(claims(ALICE), signing_key.public_pem(), kid=signing_key.kid)
        legacy = hs256(claims(ALICE), SECRET.encode())  # Supabase's legacy secret

        assert "bad signature" in refused_because(api, forged)
        accepted = api.client.post("/v1/lessons/requests", json=lesson(), headers=bearer(legacy))
        assert accepted.status_code == 201, accepted.text


def test_a_new_kid_in_the_jwks_is_picked_up_without_a_restart(
    tmp_path: Path, idp: JwksServer, signing_key: SigningKey
) -> None:
    settings = jwt_settings(idp, jwks_refresh_seconds=0)  # the test cannot wait a minute
    with served(f"sqlite:///{tmp_path / 'ledger.db'}", jwt=settings) as api:
        old = api.client.post(
            "/v1/lessons/requests", json=lesson(), headers=bearer(signing_key.sign(claims(ALICE)))
        )
        rotated = SigningKey.ec("key-2")  # Supabase's asymmetric keys are ES256
        before = rotated.sign(claims(ALICE, jti="1"))
        refused = refused_because(api, before)
        idp.keys = [signing_key, rotated]
        after = api.client.post(
            "/v1/lessons/requests",
            json=lesson(slot="10:00-10:30", request_id="r-2"),
            headers=bearer(rotated.sign(claims(ALICE))),
        )

    assert old.status_code == 201
    assert "unknown signing key" in refused
    assert after.status_code == 201, after.text


def test_with_the_jwks_url_down_the_cached_keys_keep_working(
    tmp_path: Path, idp: JwksServer, signing_key: SigningKey
) -> None:
    # Refreshes are due at every request, and every one fails while the URL is down.
    settings = jwt_settings(idp, jwks_refresh_seconds=0, jwks_max_age_seconds=0)
    with served(f"sqlite:///{tmp_path / 'ledger.db'}", jwt=settings) as api:
        first = api.client.post(
            "/v1/lessons/requests", json=lesson(), headers=bearer(signing_key.sign(claims(ALICE)))
        )
        idp.stop()
        answers = [
            api.client.post(
                "/v1/lessons/requests",
                json=lesson(slot=f"{hour:02d}:00-{hour:02d}:30", request_id=f"r-{hour}"),
                headers=bearer(signing_key.sign(claims(ALICE, jti=str(hour)))),  # new tokens
            )
            for hour in range(10, 15)
        ]

    assert first.status_code == 201
    assert [answer.status_code for answer in answers] == [201] * 5, answers[-1].text


def test_one_providers_jwt_gets_403_on_another_providers_lesson(
    api: Api, signing_key: SigningKey
) -> None:
    alice, bob = (bearer(signing_key.sign(claims(who))) for who in (ALICE, BOB))
    made = api.client.post("/v1/lessons/requests", json=lesson(), headers=alice)
    lesson_id, position = made.json()["lesson_id"], made.json()["position"]
    caught_up = {"min_position": position}

    assert made.status_code == 201
    assert api.client.get(f"/v1/lessons/{lesson_id}", params=caught_up, headers=alice).is_success
    for answer in [
        api.client.get(f"/v1/lessons/{lesson_id}", params=caught_up, headers=bob),
        api.client.get(f"/v1/lessons/{lesson_id}/history", headers=bob),
        api.client.post(f"/v1/lessons/{lesson_id}/cancellation", json={}, headers=bob),
        api.client.post(
            "/v1/lessons/requests", json={**lesson(), "providerId": ALICE}, headers=bob
        ),
    ]:
        assert_problem(answer, 403)
    listed = api.client.get("/v1/lessons", params={"provider_id": ALICE}, headers=bob)
    assert listed.status_code in (200, 403) and lesson_id not in listed.text


def test_roles_come_from_the_role_claim(api: Api, signing_key: SigningKey) -> None:
    admin = bearer(signing_key.sign(claims("ops-admin", app_role="admin")))
    worker = bearer(signing_key.sign(claims("generator-1", app_role=["worker"])))
    body = {**lesson(), "providerId": ALICE}

    by_admin = api.client.post("/v1/lessons/requests", json=body, headers=admin)
    by_worker = api.client.post("/v1/lessons/requests", json=body, headers=worker)

    assert by_admin.status_code == 201, by_admin.text
    assert "a worker token cannot do this" in assert_problem(by_worker, 403)["detail"]
    entry = api.client.get(
        f"/v1/lessons/{by_admin.json()['lesson_id']}/history", headers=admin
    ).json()["entries"][0]
    assert (entry["actor"], entry["source"]) == ("ops-admin", "api-jwt")


def test_a_verified_token_is_remembered_until_it_expires(api: Api, signing_key: SigningKey) -> None:
    token = signing_key.sign(claims(ALICE))
    assert api.app.state.tokens.remembered(token) is None
    api.client.get("/v1/lessons", headers=bearer(token))
    remembered = api.app.state.tokens.remembered(token)
    assert remembered is not None and remembered.provider_id == ALICE


def test_a_page_session_from_a_jwt_ends_when_the_jwt_expires(
    api: Api, signing_key: SigningKey
) -> None:
    """Signed in to the pages with a JWT that expires in a few seconds: the pages open at
    once, and send the browser to sign in again once the JWT has expired, hours before
    the session's own lifetime (8 h)."""
    expires = time.time() + 3
    token = signing_key.sign(claims("ops-admin", lifetime=3, app_role="admin"))
    form = api.client.get("/sign-in")
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert nonce is not None, form.text
    signed_in = api.client.post("/sign-in", data={"token": token, "csrf_token": nonce[1]})
    assert signed_in.status_code == 303, signed_in.text
    assert api.client.get("/operations").status_code == 200

    deadline = time.monotonic() + 30
    while (page := api.client.get("/operations")).status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its JWT by 30 s"
        time.sleep(0.2)
    assert time.time() >= expires - 1, "the session ended before its JWT expired"
    assert page.status_code == 303 and page.headers["location"].startswith("/sign-in")


def test_a_page_session_speaks_for_its_tokens_kind_until_the_earlier_end(
    tmp_path: Path,
) -> None:
    """A session started from a JWT ends at the JWT's `exp` when that comes first, and
    is found as a JWT's (the commands it leads to are recorded as `api-jwt`); a ledger
    token's lasts the whole lifetime."""
    database = Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    tokens = TokenStore(SqlStore(database))
    sessions = PageSessions(tokens.sql)
    ledger_token, _ = tokens.create("admin")
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    jwt = ApiToken("jwt:ops-admin", "admin", None, "ops-admin", "", kind="jwt",
                   expires_at=in_an_hour)  # fmt: skip

    jwt_id, jwt_session = sessions.start(jwt, timedelta(hours=8))
    ledger_id, ledger_session = sessions.start(ledger_token, timedelta(hours=8))

    assert jwt_session.expires_at == in_an_hour
    assert ledger_session.expires_at > in_an_hour + timedelta(hours=6)
    found_jwt, found_ledger = sessions.find(jwt_id), sessions.find(ledger_id)
    assert found_jwt is not None and found_jwt.token.kind == "jwt"
    assert found_jwt.token.source == "api-jwt"
    assert found_ledger is not None and found_ledger.token.kind == "ledger"


def test_without_jwt_settings_nothing_changes(tmp_path: Path, signing_key: SigningKey) -> None:
    with served(f"sqlite:///{tmp_path / 'ledger.db'}") as api:
        answer = api.client.get("/v1/lessons", headers=bearer(signing_key.sign(claims(ALICE))))
        own = api.client.get("/v1/lessons", headers=api.auth("provider", ALICE))
    assert "not valid or was revoked" in assert_problem(answer, 401)["detail"]
    assert own.status_code == 200


def test_unsafe_jwt_settings_are_one_line_and_the_server_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "ledger.db"
    monkeypatch.setenv("LESSON_LEDGER_JWT_SECRET", SECRET)  # without issuer and audience

    ran = cli("serve", "--port", "1", database_url=f"sqlite:///{database}")

    assert ran.exit_code == 2
    assert ran.stderr.strip().splitlines() == [
        "invalid: LESSON_LEDGER_JWT_ISSUER and LESSON_LEDGER_JWT_AUDIENCE must be set with "
        "LESSON_LEDGER_JWT_JWKS_URL or LESSON_LEDGER_JWT_SECRET: a token for another issuer "
        "or audience must not pass"
    ]
    assert not database.exists()


def test_a_provider_id_is_a_uuid(api: Api, signing_key: SigningKey) -> None:
    token = signing_key.sign(claims(str(uuid.uuid4()).upper()))
    assert api.client.get("/v1/lessons", headers=bearer(token)).status_code == 200
