"""`lesson-ledger tokens create | list | revoke` as an operator runs them, on SQLite and
PostgreSQL: a token printed once and then working over HTTP; listed without its text;
revoked, and then refused."""

from __future__ import annotations

from domain import LessonLedger
from tests.support.command_line import cli
from tests.support.http import PROVIDER, lesson
from tests.support.served import served
from tests.support.stores import Store


def test_a_token_is_created_listed_and_revoked_from_the_command_line(
    store: Store, ledger: LessonLedger
) -> None:
    """On a ledger's database (`db migrate`, or a server's first start, makes it)."""
    # `--provider`, as `request` and `show` spell it, or `--provider-id`.
    made = cli(
        "tokens", "create", "--role", "provider", "--provider", PROVIDER, "--name", "calendar",
        database_url=store.url,
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    text = made.stdout.strip()
    assert text.startswith("llt_") and "shown once" in made.stderr
    other = cli(
        "tokens", "create", "--role", "provider", "--provider-id", PROVIDER,
        database_url=store.url,
    )  # fmt: skip
    assert other.exit_code == 0, other.stderr

    with served(store.url, token_cache_seconds=0) as api:  # a revocation seen at once
        bearer = {"Authorization": f"Bearer {text}"}
        created = api.client.post("/v1/lessons/requests", json=lesson(), headers=bearer)
        assert created.status_code == 201, created.text
        listed = cli("tokens", "list", database_url=store.url).stdout
        assert "calendar" in listed and PROVIDER in listed and text not in listed
        token_id = made.stderr.split()[1]
        assert token_id in listed

        revoked = cli("tokens", "revoke", token_id, database_url=store.url)
        assert revoked.exit_code == 0 and f"revoked {token_id}" in revoked.stdout
        again = cli("tokens", "revoke", token_id, database_url=store.url)
        assert again.exit_code == 1, again.stderr
        assert again.stderr.strip() == f"not found: no active token has the id {token_id!r}"
        refused = api.client.get("/v1/lessons", headers=bearer)
        assert refused.status_code == 401


def test_the_first_token_can_be_made_before_any_server_has_started(store: Store) -> None:
    """An operator's first step on a new PostgreSQL schema (or SQLite file): the schema
    and the token table are made, as a server's first start would make them."""
    made = cli("tokens", "create", "--role", "admin", database_url=store.url)
    assert made.exit_code == 0, made.stderr
    listed = cli("tokens", "list", database_url=store.url)
    assert listed.exit_code == 0 and made.stderr.split()[1] in listed.stdout
    with served(store.url) as api:
        bearer = {"Authorization": f"Bearer {made.stdout.strip()}"}
        assert api.client.get("/v1/lessons", headers=bearer).status_code == 200


def test_a_bad_token_request_names_the_option(store: Store) -> None:
    def create(*args: str) -> str:
        ran = cli("tokens", "create", *args, database_url=store.url)
        assert ran.exit_code == 2
        return ran.stderr.strip()

    assert create("--role", "provider", "--provider-id", "nope") == (
        "invalid: --provider-id: is not a UUID: 'nope'"
    )
    assert create("--role", "provider").startswith("invalid: --provider-id: is needed")
    assert create("--role", "king").startswith("invalid: --role: must be one of")
    assert create("--role", "admin", "--provider", PROVIDER).startswith("invalid: --provider-id:")
    unknown = cli("tokens", "revoke", "nope", database_url=store.url)  # not bad input: exit 1
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == "not found: no active token has the id 'nope'"
