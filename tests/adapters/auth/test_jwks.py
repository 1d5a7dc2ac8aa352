"""The JWKS cache (adapters/auth/jwks.py) against a JWKS document served on loopback, on a
clock the test moves: refreshes at most once per interval, the last good keys kept while
the URL is down, only allowed key types used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.auth.errors import KeysUnavailable, Unauthenticated
from adapters.auth.jwks import JwksCache, usable_keys
from adapters.auth.settings import JwtSettings
from tests.support.http import assert_problem
from tests.support.jwks import AUDIENCE, ISSUER, JwksServer, SigningKey, claims
from tests.support.served import served


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer(SigningKey.rsa("key-1")) as running:
        yield running


def test_unknown_kids_fetch_the_jwks_at_most_once_a_minute(
    server: JwksServer, clock: Clock
) -> None:
    cache = JwksCache(server.url, refresh_seconds=60, clock=clock)
    assert cache.key("key-1").key_id == "key-1"
    server.keys.append(SigningKey.ec("key-2"))

    for _ in range(20):  # a flood of tokens naming a key it has not seen, within a minute
        with pytest.raises(Unauthenticated, match="unknown signing key"):
            cache.key("key-2")
        clock.now += 2.9
    assert server.fetches == 1

    clock.now = 1060.0  # a minute after the first fetch: the next unknown kid refreshes
    assert cache.key("key-2").algorithm_name == "ES256"
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            cache.key("key-3")
    assert server.fetches == 2


def test_old_keys_are_refreshed_in_the_background_and_kept_when_the_url_is_down(
    server: JwksServer, clock: Clock
) -> None:
    cache = JwksCache(server.url, refresh_seconds=60, max_age_seconds=600, clock=clock)
    first = cache.key("key-1")
    server.stop()
    clock.now += 601

    assert cache.key("key-1") is first  # answered at once; the refresh runs aside
    assert cache._background is not None
    cache._background.join(timeout=10)
    assert cache.fetches == 2
    assert cache.key("key-1") is first


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"keys": 1}', b"[" * 50_000 + b"]" * 50_000],
    ids=["not-json", "no-keys-list", "too-deep"],
)
def test_a_document_that_is_no_jwks_keeps_the_last_good_keys(
    server: JwksServer, clock: Clock, body: bytes
) -> None:
    cache = JwksCache(server.url, refresh_seconds=60, clock=clock)
    first = cache.key("key-1")
    server.body = body
    clock.now += 61

    with pytest.raises(Unauthenticated, match="unknown signing key"):
        cache.key("key-2")  # fetched again, and what came is not a JWKS

    assert server.fetches == 2
    assert cache.key("key-1") is first


def test_no_keys_ever_fetched_is_keys_unavailable(clock: Clock) -> None:
    with JwksServer() as down:
        url = down.url
    cache = JwksCache(url, clock=clock, timeout_seconds=2)
    with pytest.raises(KeysUnavailable):
        cache.key("key-1")


def test_only_rs256_and_es256_signing_keys_are_used() -> None:
    rsa, ec = SigningKey.rsa("rsa"), SigningKey.ec("ec")
    document = {
        "keys": [
            rsa.jwk(),
            ec.jwk(),
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
            {**SigningKey.rsa("rs512").jwk(), "alg": "RS512"},
            {**SigningKey.rsa("enc").jwk(), "use": "enc"},
            {**SigningKey.rsa("hs").jwk(), "alg": "HS256"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},  # no kid
        ]
    }
    keys = usable_keys(document)
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "ec": "ES256",
    }
    with pytest.raises(ValueError, match="no RS256 or ES256"):
        usable_keys({"keys": document["keys"][2:]})


def test_the_api_answers_503_when_no_keys_can_be_fetched(tmp_path: Path) -> None:
    with JwksServer() as down:
        url = down.url
    settings = JwtSettings(jwks_url=url, issuer=ISSUER, audience=AUDIENCE)
    token = SigningKey.rsa("key-1").sign(claims("3d1f6a2e-5b7c-4e8f-9a0b-1c2d3e4f5a6b"))
    with served(f"sqlite:///{tmp_path / 'ledger.db'}", jwt=settings) as api:
        answer = api.client.get("/v1/lessons", headers={"Authorization": f"Bearer {token}"})
    assert "cannot be fetched" in assert_problem(answer, 503)["detail"]
