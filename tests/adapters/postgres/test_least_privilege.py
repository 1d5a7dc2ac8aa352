"""Least privilege on PostgreSQL, with roles the tests create: a migration role that owns
only its schema runs `lesson-ledger db migrate`; a serving role granted exactly what the
README lists serves requests, the follower and the worker; a schema-only role runs the
ledger in its schema; with table creation off a missing table, or a missing grant, is one
line at start."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from adapters.migrate import TABLES
from adapters.postgres import rights
from adapters.worker import WorkerSettings, start_worker_in_background
from tests.support import ROOT
from tests.support.command_line import ANY_PORT, cli
from tests.support.http import PROVIDER, assert_problem, csrf, lesson, sign_in
from tests.support.projections import wait_until
from tests.support.served import served
from tests.support.stores import POSTGRES_URL, require_postgres

GRANTS_HEADER = "-- The serving role's rights"


@dataclass(frozen=True)
class Roles:
    """A schema owned by `owner` (no right on the database) and a serving role `app`."""

    schema: str
    owner: str
    app: str

    def url(self, role: str, **options: str) -> str:
        server = POSTGRES_URL.split("://", 1)[1].split("@", 1)[1]
        query = "&".join(f"{k}={v}" for k, v in {"schema": self.schema, **options}.items())
        return f"postgresql://{role}@{server}?{query}"


@pytest.fixture
def roles() -> Iterator[Roles]:
    require_postgres()
    tag = uuid.uuid4().hex[:10]
    found = Roles(f"ledger_{tag}", f"owner_{tag}", f"app_{tag}")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for role in (found.owner, found.app):
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE SCHEMA "{found.schema}" AUTHORIZATION "{found.owner}"')
    try:
        yield found
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{found.schema}" CASCADE')
            for role in (found.app, found.owner):
                conn.execute(f'DROP OWNED BY "{role}"')
                conn.execute(f'DROP ROLE "{role}"')


def readme_grants(roles: Roles) -> list[str]:
    """The README's GRANT block, with this test's schema and role names."""
    text = (ROOT / "README.md").read_text()
    start = text.index(GRANTS_HEADER)
    block = text[start : text.index("```", start)]
    for name, value in (("ledger_owner", roles.owner), ("ledger_app", roles.app)):
        block = re.sub(rf"\b{name}\b", value, block)
    block = re.sub(r"\bledger\b", roles.schema, block)
    statements = [line for line in block.splitlines() if line and not line.startswith("--")]
    assert statements and all(line.endswith(";") for line in statements), statements
    return statements


def migrate(url: str) -> dict[str, str]:
    ran = cli("db", "migrate", database_url=url)
    assert ran.exit_code == 0, ran.stderr
    steps = dict(
        line.rsplit(": ", 1)
        for line in ran.stdout.splitlines()
        if line.startswith(("schema ", "table ", "function "))
    )
    return steps


def test_a_migration_role_migrates_and_the_readme_grants_are_all_a_serving_role_needs(
    roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner_url = roles.url(roles.owner)
    first = migrate(owner_url)
    assert first[f"schema {roles.schema}"] == "already there"  # made by the administrator
    assert {f"table {roles.schema}.{table}" for table in TABLES} <= set(first)
    assert {first[f"table {roles.schema}.{table}"] for table in TABLES} == {"created"}
    functions = [step for step in first if step.startswith("function")]
    assert len(functions) == 2 and all(first[step] == "created" for step in functions)
    again = migrate(owner_url)
    assert again.keys() == first.keys()
    assert set(again.values()) == {"already there"}  # idempotent
    with psycopg.connect(POSTGRES_URL) as conn:
        made = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (roles.schema,)
        ).fetchall()
    assert sorted(name for (name,) in made) == sorted(TABLES)

    with psycopg.connect(roles.url(roles.owner).split("?")[0], autocommit=True) as conn:
        for statement in readme_grants(roles):
            conn.execute(statement)

    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")
    app_url = roles.url(roles.app)
    settings = WorkerSettings(generator="template", worker_poll_seconds=0.05)
    with served(app_url) as api:
        provider = api.auth("provider", PROVIDER)
        admin = api.auth("admin")
        created = api.client.post("/v1/lessons/requests", json=lesson(), headers=provider)
        assert created.status_code == 201, created.text
        lesson_id, position = created.json()["lesson_id"], created.json()["position"]
        read = api.client.get(
            f"/v1/lessons/{lesson_id}", params={"min_position": position}, headers=provider
        )
        assert read.status_code == 200, read.text  # the follower, as the serving role
        worker = start_worker_in_background(app_url, settings, ledger=api.app.state.ledger)
        try:
            wait_until(
                lambda: (
                    api.client.get(f"/v1/lessons/{lesson_id}", headers=admin).json()["status"]
                    == "generated"
                ),
                30,
                "the worker, as the serving role, to generate the lesson",
            )
        finally:
            assert worker.stop(timeout=20)
        history = api.client.get(f"/v1/lessons/{lesson_id}/history", headers=provider)
        assert [e["event"] for e in history.json()["entries"]] == [
            "OpenedByRequest",
            "LessonGenerated",
        ]
        batch = api.client.post(
            "/v1/lessons/requests/batch",
            json={"lessons": [lesson(slot="10:00-10:30", request_id="r-2")]},
            headers=provider,
        )
        assert batch.status_code == 200, batch.text
        # A student erased, a checkpoint signed over the erasure, the log verified from
        # the Proof page: each writes tables of its own.
        erased = api.client.post(
            "/v1/students/st-1/erasure", json={"reason": "request"}, headers=admin
        )
        assert erased.status_code == 200, erased.text
        assert api.app.state.audit.checkpoint().erasures.count == 1
        sign_in(api.client, api.tokens["admin:None"])
        page = api.client.get("/proof")
        started = api.client.post("/proof/verify", data={"csrf_token": csrf(page.text)})
        assert started.status_code == 303, started.text
        wait_until(
            lambda: "Intact" in api.client.get("/proof").text,
            30,
            "the Proof page's verify, as the serving role, to find the log intact",
        )

    # A rebuild, as the owner, makes the lessons table anew; the serving role reads it.
    monkeypatch.delenv("LESSON_LEDGER_CREATE_TABLES")
    rebuilt = cli("projections", "rebuild", database_url=owner_url)
    assert rebuilt.exit_code == 0, rebuilt.stderr
    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")
    status = cli("projections", "status", "--json", database_url=app_url)
    assert status.exit_code == 0, status.stderr
    with served(app_url) as api:
        listed = api.client.get("/v1/lessons", headers=api.auth("admin"))
        assert listed.status_code == 200 and len(listed.json()["items"]) == 2


def test_a_role_that_owns_only_its_schema_runs_the_ledger_in_it(roles: Roles) -> None:
    """No CREATE right on the database: the schema is there, so none is needed."""
    with served(roles.url(roles.owner)) as api:
        created = api.client.post(
            "/v1/lessons/requests", json=lesson(), headers=api.auth("provider", PROVIDER)
        )
        assert created.status_code == 201, created.text
        read = api.client.get(
            f"/v1/lessons/{created.json()['lesson_id']}",
            params={"min_position": created.json()["position"]},
            headers=api.auth("provider", PROVIDER),
        )
        assert read.status_code == 200


@pytest.mark.parametrize("command", [("projections", "status"), ("serve", *ANY_PORT), ("worker",)])
def test_with_table_creation_off_a_missing_table_is_one_line_at_start(
    roles: Roles, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")
    ran = cli(*command, database_url=roles.url(roles.owner))
    assert ran.exit_code == 3
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert "table creation is off" in lines[0] and "lesson-ledger db migrate" in lines[0]
    assert f"{roles.schema}." in lines[0]


def granted(statements: list[str], schema: str) -> set[tuple[str, str, str]]:
    """What GRANT statements grant, as adapters.postgres.rights spells it."""
    found = set()
    for statement in statements:
        grant = re.fullmatch(r"GRANT (.+) ON (SCHEMA |SEQUENCE |FUNCTION )?(.+) TO \S+;", statement)
        if grant is None:
            continue  # ALTER DEFAULT PRIVILEGES: for tables made later
        privileges, kind, objects = grant.groups()
        for name in objects.split(", "):
            kind_name = (kind or "TABLE ").strip().lower()
            in_schema = "" if kind_name == "schema" else name.removeprefix(f"{schema}.")
            found |= {(kind_name, in_schema, p) for p in privileges.split(", ")}
    return found


def test_the_readme_grants_what_a_serving_role_is_checked_for(roles: Roles) -> None:
    assert granted(readme_grants(roles), roles.schema) == set(rights.required())
    assert set(rights.TABLES) == set(TABLES)


@pytest.mark.parametrize("command", [("serve", *ANY_PORT), ("worker",)], ids=["serve", "worker"])
def test_with_table_creation_off_a_missing_grant_is_one_line_at_start(
    roles: Roles, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    """Not a 500 at the first erasure, or the first verify from the pages."""
    migrate(roles.url(roles.owner))
    with psycopg.connect(roles.url(roles.owner).split("?")[0], autocommit=True) as conn:
        for statement in readme_grants(roles):
            conn.execute(statement)
        conn.execute(f'REVOKE INSERT ON "{roles.schema}".erasure_positions FROM "{roles.app}"')
        conn.execute(f'REVOKE DELETE ON "{roles.schema}".page_runs FROM "{roles.app}"')
    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")

    ran = cli(*command, database_url=roles.url(roles.app))

    assert ran.exit_code == 3, ran.stdout
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert (
        f"lacks INSERT on {roles.schema}.erasure_positions, DELETE on {roles.schema}.page_runs"
        in lines[0]
    )
    assert "Least privilege" in lines[0] and "Traceback" not in ran.stderr


def test_the_owners_commands_run_by_the_serving_role_say_whose_they_are(
    roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild and the sealing migration rewrite tables; the serving role may not."""
    owner_url, app_url = roles.url(roles.owner), roles.url(roles.app)
    migrate(owner_url)
    with psycopg.connect(owner_url.split("?")[0], autocommit=True) as conn:
        for statement in readme_grants(roles):
            conn.execute(statement)
    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")

    for command in (("projections", "rebuild"), ("students", "encrypt-existing")):
        ran = cli(*command, database_url=app_url)
        assert ran.exit_code == 3, ran.stdout
        lines = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
        assert "as the role that owns the schema" in lines[0], lines[0]

    # Over HTTP and from the Operations page: refused at once, saying why.
    with served(app_url) as api:
        admin = api.auth("admin")
        refused = api.client.post("/v1/projections/lessons/rebuild", headers=admin)
        problem = assert_problem(refused, 409)
        assert f"does not own {roles.schema}.lessons" in problem["detail"]
        assert "`lesson-ledger projections rebuild`" in problem["detail"]
        sign_in(api.client, api.tokens["admin:None"])
        page = api.client.get("/operations").text
        assert "No rebuild from here" in page and 'action="/operations/rebuild"' not in page
        assert api.app.state.read_model.status()[0].rebuild is None

    monkeypatch.delenv("LESSON_LEDGER_CREATE_TABLES")
    for command in (("projections", "rebuild"), ("students", "encrypt-existing")):
        ran = cli(*command, database_url=owner_url)
        assert ran.exit_code == 0, ran.stderr


def test_db_migrate_grants_a_serving_role_its_rights(
    roles: Roles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--grant-to`: the README's block, from the same list the start checks."""
    owner_url, app_url = roles.url(roles.owner), roles.url(roles.app)
    for _ in range(2):  # idempotent
        ran = cli("db", "migrate", "--grant-to", roles.app, database_url=owner_url)
        assert ran.exit_code == 0, ran.stderr
        assert f"granted '{roles.app}' the serving role's rights" in ran.stdout

    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")
    with served(app_url) as api:  # its start checks every right
        created = api.client.post(
            "/v1/lessons/requests", json=lesson(), headers=api.auth("provider", PROVIDER)
        )
        assert created.status_code == 201, created.text
        erased = api.client.post(
            "/v1/students/st-1/erasure", json={"reason": "r"}, headers=api.auth("admin")
        )
        assert erased.status_code == 200, erased.text
    # A rebuild by the owner makes the lessons table anew: the role reads it still.
    monkeypatch.delenv("LESSON_LEDGER_CREATE_TABLES")
    assert cli("projections", "rebuild", database_url=owner_url).exit_code == 0
    monkeypatch.setenv("LESSON_LEDGER_CREATE_TABLES", "false")
    with served(app_url) as api:
        listed = api.client.get("/v1/lessons", headers=api.auth("admin"))
        assert listed.status_code == 200 and len(listed.json()["items"]) == 1

    # A role that does not exist is bad input, said before anything is migrated (it was
    # exit 3, an infrastructure failure, after the migration).
    nobody = cli("db", "migrate", "--grant-to", "nobody_here", database_url=owner_url)
    assert nobody.exit_code == 2 and "migrating" not in nobody.stdout
    assert nobody.stderr.strip() == (
        "invalid: --grant-to: there is no role 'nobody_here' (CREATE ROLE it first)"
    )
    sqlite_file = tmp_path / "ledger.db"
    on_sqlite = cli("db", "migrate", "--grant-to", "x", database_url=f"sqlite:///{sqlite_file}")
    assert on_sqlite.exit_code == 2 and "--grant-to" in on_sqlite.stderr
    assert not sqlite_file.exists()  # bad input writes nothing
