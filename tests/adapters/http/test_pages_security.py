"""The pages' security, through the app on a real SQLite ledger: no page without a
session; a form without its CSRF token is refused and does nothing; the cookie's flags;
sign-out and a revoked token end a session; every value from a request is shown as text;
the session cookie is never accepted by the API; CORS only for the origins set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.http.pages import operations, proof
from adapters.settings import Settings
from tests.support.command_line import cli
from tests.support.http import OTHER_PROVIDER, PROVIDER, csrf, lesson, sign_in
from tests.support.served import serving_process

PAGES = [
    "/calendar",
    "/conflicts",
    "/proof",
    "/proof/checkpoint.json",
    "/operations",
    "/erasures",
    "/lessons/689694ac-5241-543e-b8eb-6b59aeff777a",
]
FORMS = [
    "/sign-out",
    "/operations/rebuild",
    "/operations/verify",
    "/proof/checkpoint",
    "/proof/verify",
]


def app_on(tmp_path: Path, **settings: Any) -> TestClient:
    settings.setdefault("embedded_worker", "off")
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", **settings))
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_on(tmp_path) as running:
        yield running


def token(client: TestClient, role: str, provider_id: str | None = None) -> str:
    return str(client.app.state.tokens.create(role, provider_id)[1])  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", PAGES)
def test_no_page_without_a_session(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/sign-in?next=")


@pytest.mark.parametrize("path", FORMS)
def test_no_form_without_a_session(client: TestClient, path: str) -> None:
    assert client.post(path, data={"csrf_token": "x"}).status_code == 401


def test_no_live_stream_without_a_session(client: TestClient) -> None:
    response = client.get("/live/lessons", params={"provider_id": PROVIDER})
    assert response.status_code == 401


def test_the_session_cookie_is_signed_expiring_httponly_and_strict(client: TestClient) -> None:
    response = sign_in(client, token(client, "admin"))
    assert response.status_code == 303 and response.headers["location"] == "/calendar"
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith("ledger_session=")
    )
    flags = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "max-age", "path"} <= flags
    assert "samesite=strict" in header.lower()
    assert "max-age=28800" in header.lower()  # 8 hours, the default
    cookie = SimpleCookie(header)["ledger_session"].value
    assert client.get("/calendar").status_code == 200
    # Any change to the cookie breaks its signature: signed in no more.
    client.cookies.clear()
    client.cookies.set("ledger_session", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
    assert client.get("/calendar").status_code == 303


def test_the_sign_in_form_without_its_csrf_token_is_refused(client: TestClient) -> None:
    admin = token(client, "admin")
    client.get("/sign-in")
    for sent in ({"token": admin}, {"token": admin, "csrf_token": "guessed"}):
        response = client.post("/sign-in", data=sent)
        assert response.status_code == 403
        assert "ledger_session" not in response.headers.get("set-cookie", "")
    assert client.get("/calendar").status_code == 303


def test_a_wrong_token_does_not_sign_in_and_says_why(client: TestClient) -> None:
    response = sign_in(client, "llt_nope_nope")
    assert response.status_code == 401
    assert "Not signed in: the bearer token is not valid or was revoked." in response.text
    assert client.get("/calendar").status_code == 303


@pytest.mark.parametrize("path", FORMS)
def test_a_form_without_its_csrf_token_is_refused_and_does_nothing(
    client: TestClient, path: str
) -> None:
    sign_in(client, token(client, "admin"))
    for sent in ({}, {"csrf_token": "0" * 64}):
        response = client.post(path, data=sent)
        assert response.status_code == 403
        assert "CSRF" in response.text
    state = client.app.state  # type: ignore[attr-defined]
    assert state.page_runs.latest(operations.VERIFY_RUN) is None
    assert getattr(state, "rebuild_thread", None) is None
    assert state.page_runs.latest(proof.VERIFY_RUN) is None
    assert state.audit.latest_checkpoint() is None
    assert client.get("/calendar").status_code == 200  # still signed in


def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(client: TestClient) -> None:
    sign_in(client, token(client, "admin"))
    copied = client.cookies.get("ledger_session")
    page = client.get("/calendar")
    response = client.post("/sign-out", data={"csrf_token": csrf(page.text)})
    assert response.status_code == 303
    assert client.get("/calendar").status_code == 303
    client.cookies.clear()
    client.cookies.set("ledger_session", str(copied))
    assert client.get("/calendar").status_code == 303


def test_a_revoked_token_ends_its_sessions(client: TestClient) -> None:
    store = client.app.state.tokens  # type: ignore[attr-defined]
    created, text = store.create("admin")
    sign_in(client, text)
    assert client.get("/calendar").status_code == 200
    store.revoke(created.token_id)
    assert client.get("/calendar").status_code == 303


def test_a_session_expires(tmp_path: Path) -> None:
    with app_on(tmp_path, session_hours=1 / 3600) as client:  # one second
        sign_in(client, token(client, "admin"))
        assert client.get("/calendar").status_code == 200
        deadline = time.monotonic() + 10
        while client.get("/calendar").status_code == 200:
            assert time.monotonic() < deadline, "the session outlived its second"
            time.sleep(0.1)


def test_the_session_cookie_is_never_accepted_by_the_api(client: TestClient) -> None:
    sign_in(client, token(client, "admin"))
    assert client.get("/calendar").status_code == 200
    for path in ("/v1/lessons", "/v1/lessons/events", "/v1/projections"):
        assert client.get(path).status_code == 401
    response = client.post("/v1/lessons/requests", json=lesson(providerId=PROVIDER))
    assert response.status_code == 401


def test_values_from_requests_are_shown_as_text(client: TestClient) -> None:
    admin = token(client, "admin")
    bearer = {"Authorization": f"Bearer {admin}"}
    markup = "<script>alert('x')</script>"
    details = {
        "students": [{"id": "st-1", "grade": 2, "iepGoals": ["IEP-MARKER"]}],
        "subject": "Math",
        "topic": markup,
    }
    created = client.post(
        "/v1/lessons/requests",
        json=lesson(providerId=PROVIDER, details=details),
        headers=bearer,
    )
    assert created.status_code == 201, created.text
    cancelled = client.post(
        f"/v1/lessons/{created.json()['lesson_id']}/cancellation",
        json={"request_id": "r-9", "reason": "<b>why</b>"},
        headers=bearer,
    )
    assert cancelled.status_code == 201, cancelled.text
    refused = client.post(
        "/v1/lessons/requests",
        json=lesson(providerId=PROVIDER, schoolId="<img src=x onerror=alert(1)>", requestId="r-2"),
        headers=bearer,
    )
    assert refused.status_code == 422
    client.app.state.read_model.wait_for(cancelled.json()["position"])  # type: ignore[attr-defined]
    sign_in(client, admin)
    lesson_page = client.get(f"/lessons/{created.json()['lesson_id']}")
    conflicts = client.get("/conflicts")
    calendar = client.get("/calendar", params={"provider_id": PROVIDER, "week": "2025-09-08"})
    bad_filter = client.get("/calendar", params={"provider_id": "<i>p</i>", "school_id": markup})
    # Erased after the other pages are read, so that they show a readable student's part.
    erased = client.post("/v1/students/st-1/erasure", json={"reason": markup}, headers=bearer)
    assert erased.status_code == 200, erased.text
    erasures = client.get("/erasures")
    for page in (lesson_page, conflicts, calendar, bad_filter, erasures):
        assert page.status_code in (200, 400)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "<b>why" not in page.text and "<i>p</i>" not in page.text
        assert "IEP-MARKER" not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in lesson_page.text
    assert "&lt;b&gt;why&lt;/b&gt;" in lesson_page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in conflicts.text
    assert "&lt;i&gt;p&lt;/i&gt;" in bad_filter.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in erasures.text
    assert "1 erasure, newest first" in erasures.text  # not "1 erasure(s)"
    assert "st-1" not in erasures.text


def test_a_provider_session_sees_only_its_provider(client: TestClient) -> None:
    admin = {"Authorization": f"Bearer {token(client, 'admin')}"}
    theirs = client.post("/v1/lessons/requests", json=lesson(providerId=PROVIDER), headers=admin)
    client.app.state.read_model.wait_for(theirs.json()["position"])  # type: ignore[attr-defined]
    sign_in(client, token(client, "provider", OTHER_PROVIDER))
    page = client.get(f"/lessons/{theirs.json()['lesson_id']}")
    assert page.status_code == 403
    assert "school-1" not in page.text and "08:30" not in page.text
    calendar = client.get("/calendar", params={"provider_id": PROVIDER, "week": "2025-09-08"})
    assert calendar.status_code == 400 and "08:30" not in calendar.text
    assert client.get("/operations").status_code == 403
    assert client.get("/erasures").status_code == 403
    # The proof is for every reader (as GET /v1/audit/checkpoint); signing and verifying
    # are an admin's.
    assert client.get("/proof").status_code == 200
    form = {"csrf_token": csrf(client.get("/proof").text)}
    assert client.post("/proof/checkpoint", data=form).status_code == 403
    assert client.post("/proof/verify", data=form).status_code == 403
    assert client.app.state.audit.latest_checkpoint() is None  # type: ignore[attr-defined]
    stream = client.get("/live/lessons", params={"provider_id": PROVIDER})
    assert stream.status_code == 403


def test_cors_only_for_the_origins_set_and_never_with_credentials(tmp_path: Path) -> None:
    allowed = "https://calendar.example.org"
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,last-event-id",
    }
    with app_on(tmp_path) as client:  # none by default
        response = client.options("/v1/lessons/events", headers={"Origin": allowed, **preflight})
        assert "access-control-allow-origin" not in response.headers
    with app_on(tmp_path, cors_origins=[allowed]) as client:
        response = client.options("/v1/lessons/events", headers={"Origin": allowed, **preflight})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == allowed
        assert "access-control-allow-credentials" not in response.headers
        other = client.options(
            "/v1/lessons/events", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        simple = client.get("/v1/lessons", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed
        assert simple.status_code == 401  # CORS lets it be read; the token is still needed


def cookie_flags(response: httpx.Response, name: str) -> tuple[str, set[str]]:
    """A cookie the response sets: its value and its flags."""
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}="))
    flags = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    return SimpleCookie(header)[name].value, flags


def signed_in_through(base_url: str, admin: str, proto: str | None) -> set[str]:
    """Sign in as through a proxy that says `X-Forwarded-Proto: proto`: the session
    cookie's flags (the sign-in cookie's are checked to match)."""
    forwarded = {"X-Forwarded-Proto": proto} if proto else {}
    form = httpx.get(f"{base_url}/sign-in", headers=forwarded)
    pair, pair_flags = cookie_flags(form, "ledger_sign_in")
    signed = httpx.post(
        f"{base_url}/sign-in",
        data={"token": admin, "csrf_token": csrf(form.text)},
        headers={**forwarded, "Cookie": f"ledger_sign_in={pair}"},
    )
    assert signed.status_code == 303, signed.text
    _, flags = cookie_flags(signed, "ledger_session")
    assert ("secure" in flags) == ("secure" in pair_flags)
    return flags


def test_behind_a_tls_proxy_the_cookies_are_secure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lesson-ledger serve` believes `X-Forwarded-Proto` from a proxy on the same host;
    one elsewhere is named by uvicorn's FORWARDED_ALLOW_IPS (README, Audit pages)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    admin = cli("tokens", "create", "--role", "admin", database_url=url).stdout.strip()
    with serving_process(url, tmp_path / "serve.log") as (base_url, _):
        assert "secure" not in signed_in_through(base_url, admin, None)
        assert "secure" in signed_in_through(base_url, admin, "https")

    # The proxy is elsewhere: a header from this host is not believed.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.2.3")
    with serving_process(url, tmp_path / "elsewhere.log") as (base_url, _):
        assert "secure" not in signed_in_through(base_url, admin, "https")
