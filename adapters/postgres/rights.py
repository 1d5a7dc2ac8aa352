"""The serving role's rights in the ledger's schema: what `serve` and `worker` use, checked
at their start when table creation is off (LESSON_LEDGER_CREATE_TABLES=false), so that a
grant missing is one line then rather than a 500 at the first use of its table.

The README's GRANT block ("Least privilege") grants exactly these; a test holds the two
together and serves every kind of request as a role granted that block."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from psycopg import sql

from adapters.storage.database import Database
from domain.errors import LedgerUnavailable

_READ_ADD = ("SELECT", "INSERT")
_READ_ADD_CHANGE = ("SELECT", "INSERT", "UPDATE")
_ALL = ("SELECT", "INSERT", "UPDATE", "DELETE")

TABLES: dict[str, tuple[str, ...]] = {
    "lessonledger_events": _READ_ADD,
    "idempotency_keys": _READ_ADD,
    "invalid_requests": _READ_ADD,
    "lessons": _READ_ADD_CHANGE,
    "lessons_tracking": _READ_ADD_CHANGE,
    "generation_worker_tracking": _READ_ADD_CHANGE,
    "api_tokens": _READ_ADD_CHANGE,
    "runner_leases": _ALL,
    "projection_rebuilds": ("SELECT",),
    "data_keys": _ALL,
    "data_key_destructions": _READ_ADD_CHANGE,
    "generation_jobs": _ALL,
    "generation_rate_calls": _ALL,
    "erasures": _READ_ADD,
    "erasure_positions": _READ_ADD,
    "merkle_checkpoints": _READ_ADD,
    "merkle_checkpoint_erasures": _READ_ADD,
    "merkle_reanchorings": _READ_ADD,
    "page_sessions": _ALL,
    "page_runs": _ALL,
    "generation_usage": _READ_ADD_CHANGE,
    "generation_token_totals": _READ_ADD_CHANGE,
    "generation_rate_limit": _READ_ADD_CHANGE,
    "merkle_blocks": _READ_ADD_CHANGE,
    "merkle_nodes": _READ_ADD_CHANGE,
    "merkle_position": _READ_ADD_CHANGE,
}
"""Each table and the rights on it."""

SEQUENCES = ("lessonledger_events_notification_id_seq", "generation_rate_calls_id_seq")
"""USAGE on each."""

FUNCTIONS = (
    "lessonledger_events_append",
    "lessonledger_events_append_one",
    "generation_rate_acquire",
)
"""EXECUTE on each."""


def required() -> Iterator[tuple[str, str, str]]:
    """Every right as (kind, object in the schema, privilege); the schema's own is
    ("schema", "", "USAGE")."""
    yield "schema", "", "USAGE"
    for table, privileges in TABLES.items():
        yield from (("table", table, privilege) for privilege in privileges)
    yield from (("sequence", sequence, "USAGE") for sequence in SEQUENCES)
    yield from (("function", function, "EXECUTE") for function in FUNCTIONS)


# An object that does not exist is not this check's to report (the tables' check says
# so first, and the rate-limit function comes with the worker's first use of limits).
_MISSING_SQL = """
SELECT kind, name, privilege
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS r(kind, name, privilege, n)
WHERE NOT coalesce(CASE kind
    WHEN 'schema' THEN has_schema_privilege(%s, privilege)
    WHEN 'table' THEN has_table_privilege(to_regclass(%s || '.' || name)::oid, privilege)
    WHEN 'sequence' THEN has_sequence_privilege(to_regclass(%s || '.' || name)::oid, privilege)
    ELSE has_function_privilege(to_regproc(%s || '.' || name)::oid, privilege)
END, true)
ORDER BY n
"""


def missing_rights(database: Database) -> list[str]:
    """The rights the connecting role lacks, as "INSERT on ledger.page_runs"."""
    kinds, names, privileges = (list(column) for column in zip(*required(), strict=True))
    quoted = f'"{database.schema}"'
    with database.connect() as conn:
        rows = conn.execute(
            _MISSING_SQL,
            (kinds, names, privileges, database.schema, quoted, quoted, quoted),
        ).fetchall()
    return [
        f"{privilege} on schema {database.schema}"
        if kind == "schema"
        else f"{privilege} on {database.schema}.{name}"
        for kind, name, privilege in rows
    ]


def check_rights(database: Database) -> None:
    """With table creation off on PostgreSQL: LedgerUnavailable, one line, naming every
    right of the serving role's that the connecting role lacks."""
    if database.kind != "postgresql" or database.create_tables:
        return
    missing = missing_rights(database)
    if missing:
        raise LedgerUnavailable(
            f"the role {database.user!r} lacks {', '.join(missing)} in {database.where} "
            "(LESSON_LEDGER_CREATE_TABLES=false checks the serving role's rights at start): "
            'grant them as the README\'s "Least privilege" lists'
        )


REBUILT_TABLES = ("lessons", "lessons_tracking", "projection_rebuilds")
"""What a rebuild of the lessons table drops, renames or locks: its owner's to do."""

_REBUILD_SQL = """
SELECT has_schema_privilege(%s, 'CREATE'), array(
    SELECT name FROM unnest(%s::text[]) AS name
    JOIN pg_class c ON c.oid = to_regclass(%s || '.' || name)
    WHERE NOT pg_has_role(c.relowner, 'USAGE') ORDER BY name)
"""


def rebuild_refusal(database: Database) -> str | None:
    """Why the connecting role may not rebuild the lessons table (the serving role of
    "Least privilege"), or None: it owns those tables and may create in the schema."""
    if database.kind != "postgresql":
        return None
    with database.connect() as conn:
        found = conn.execute(
            _REBUILD_SQL, (database.schema, list(REBUILT_TABLES), f'"{database.schema}"')
        ).fetchone()
    assert found is not None
    may_create, names = found
    not_owned = [str(name) for name in cast(list[str], names)]
    if may_create and not not_owned:
        return None
    lacks = [f"{database.schema}.{name}" for name in not_owned]
    what = f"does not own {', '.join(lacks)}" if lacks else ""
    if not may_create:
        what = " and ".join(filter(None, [what, f"may not create in schema {database.schema}"]))
    return (
        f"the server's database role {database.user!r} {what}: rebuilds run as the role that "
        "owns the schema (`lesson-ledger projections rebuild` as it)"
    )


def grant(database: Database, role: str) -> int:
    """Grant `role` every right of `required()`, as the schema's owner (`db migrate
    --grant-to`), and the lessons table's on tables the owner makes later (a rebuild's);
    how many statements. Idempotent, in one transaction."""
    schema, to = sql.Identifier(database.schema), sql.Identifier(role)
    statements = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, to)
        if kind == "schema"
        else sql.SQL("GRANT {} ON {} {}.{} TO {}").format(
            sql.SQL(privilege), sql.SQL(kind.upper()), schema, sql.Identifier(name), to
        )
        for kind, name, privilege in required()
    ]
    statements.append(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            schema, sql.SQL(", ").join(map(sql.SQL, TABLES["lessons"])), to
        )
    )
    with database.connect(autocommit=False) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    return len(statements)


def role_exists(database: Database, role: str) -> bool:
    """Whether the server has this role (to grant it rights)."""
    with database.connect() as conn:
        found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return found is not None
