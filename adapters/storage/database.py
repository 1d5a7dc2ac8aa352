"""The database a URL names: the embedded SQLite file or PostgreSQL, and its companions.

`sqlite:///PATH` (relative) or `sqlite:////abs/path`, and
`postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?OPTIONS]`. Without a URL the setting
LESSON_LEDGER_DATABASE_URL decides, else `sqlite:///./lesson-ledger.db`.

The query string holds the ledger's own options, `schema=NAME` and `pooled=true|false`
(`pgbouncer=true`, as Prisma spells it, means `pooled=true`), and any libpq connection
option (`sslmode`, `sslrootcert`, `application_name`, `connect_timeout`, `options`,
`target_session_attrs`, ...), which goes to every connection the ledger opens; an option
libpq does not know is refused at once, naming it.

A PostgreSQL database also carries what adapters/storage/settings.py sets beside its URL:
the direct URL (`direct`: sessions for LISTEN, advisory locks, table creation) and the
read replica (`replica`), both in the same schema. Whether a URL goes through a pooler
that may hand each transaction to another server session is `is_pooled()`: the URL says
so, or a probe finds it (docs/decisions/0030-transaction-poolers.md).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import psycopg
from psycopg.conninfo import make_conninfo

from adapters.storage.settings import DEFAULT_DATABASE_URL, DatabaseSettings
from domain.errors import LedgerUnavailable, one_line

__all__ = ["DEFAULT_DATABASE_URL", "Database", "DatabaseSettings", "DatabaseUrlError"]

DATABASE_URL_SETTING = "LESSON_LEDGER_DATABASE_URL"
DIRECT_URL_SETTING = "LESSON_LEDGER_DIRECT_DATABASE_URL"
READ_URL_SETTING = "LESSON_LEDGER_READ_DATABASE_URL"
# Serialises table creation across processes, per schema (the first of the lock's two
# keys; the second is the schema's): concurrent CREATE TABLE IF NOT EXISTS in PostgreSQL
# fails with "tuple concurrently updated" (see NOTES-eventsourcing.md); ledgers in other
# schemas make other objects and need not wait.
DDL_LOCK_NAMESPACE = 0x4C44
DDL_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s::int4, %s::int4)"
APPLICATION_NAME = "LessonLedger"
"""The eventsourcing application's name, which names its tables (`lessonledger_events`)."""
DEFAULT_CONNECT_TIMEOUT = "5"
_LEDGER_OPTIONS = ("schema", "pooled", "pgbouncer")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class DatabaseUrlError(LedgerUnavailable):
    """The database URL is not one the ledger understands."""


@dataclass(frozen=True)
class Database:
    """Where the ledger's events, tracking and read model live."""

    url: str
    kind: str  # "sqlite" or "postgresql"
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"
    options: tuple[tuple[str, str], ...] = ()
    """libpq connection options from the URL's query string, for every connection."""
    pooling: str = "auto"
    """"pooled" or "direct" when the URL says so (`pooled=`), else "auto" (probed)."""
    setting: str = DATABASE_URL_SETTING
    """The setting the URL came from, to name it in an error."""
    direct: Database | None = None
    replica: Database | None = None
    create_tables: bool = True
    replica_max_lag: float = 5.0
    lease_seconds: float = 10.0
    poll_seconds: float = 0.25

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        settings: DatabaseSettings | None = None,
        companions: bool = True,
    ) -> Database:
        """The database the URL names (default: the setting), with the direct and read
        URLs and the other database settings from `settings` (default: the environment);
        `companions=False` for a database that is not the ledger's (an import's source)."""
        settings = settings or DatabaseSettings()
        if not companions:
            settings = settings.model_copy(
                update={"direct_database_url": None, "read_database_url": None}
            )
        url = url or settings.database_url
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            return cls._sqlite(url, parts.netloc, parts.path)
        if parts.scheme not in ("postgresql", "postgres"):
            raise DatabaseUrlError(
                f"database URL {redacted(url)!r}: unknown scheme {parts.scheme!r}; use "
                "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
            )
        main = cls._postgresql(url)
        found: dict[str, Database] = {}
        for name, setting, companion_url in (
            ("direct", DIRECT_URL_SETTING, settings.direct_database_url),
            ("replica", READ_URL_SETTING, settings.read_database_url),
        ):
            if companion_url:
                companion = cls._postgresql(companion_url, setting=setting, schema=main.schema)
                if name == "direct" and companion.pooling == "pooled":
                    raise DatabaseUrlError(
                        f"{setting} {redacted(companion_url)!r} says it is pooled: the direct "
                        "URL must reach PostgreSQL without a transaction pooler"
                    )
                found[name] = companion
        return replace(
            main,
            direct=found.get("direct"),
            replica=found.get("replica"),
            create_tables=settings.create_tables,
            replica_max_lag=settings.replica_max_lag_seconds,
            lease_seconds=settings.lease_seconds,
            poll_seconds=settings.poll_seconds,
        )

    @classmethod
    def _sqlite(cls, url: str, netloc: str, path: str) -> Database:
        if netloc or not path.startswith("/") or path == "/":
            raise DatabaseUrlError(
                f"database URL {url!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        file = unquote(path[1:])
        if file != ":memory:":
            parent = Path(file).expanduser().resolve().parent
            if not parent.is_dir():
                raise DatabaseUrlError(f"database URL {url!r}: the folder {parent} does not exist")
        return cls(url=url, kind="sqlite", path=file)

    @classmethod
    def _postgresql(
        cls, url: str, *, setting: str = DATABASE_URL_SETTING, schema: str | None = None
    ) -> Database:
        where = f"database URL {redacted(url)!r}"
        if setting != DATABASE_URL_SETTING:
            where = f"{setting} {redacted(url)!r}"
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise DatabaseUrlError(f"{where}: write postgresql://USER@HOST:PORT/DB")
        try:
            port = parts.port or 5432
        except ValueError:
            raise DatabaseUrlError(f"{where}: the port is not a number") from None
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname or not parts.username:
            raise DatabaseUrlError(f"{where}: write postgresql://USER@HOST:PORT/DB")
        ours, libpq = _split_options(where, parts.query)
        given_schema = ours.get("schema")
        if given_schema is not None and schema is not None and given_schema != schema:
            raise DatabaseUrlError(
                f"{where}: schema {given_schema!r} differs from the main URL's {schema!r}"
            )
        chosen = given_schema or schema or "public"
        if not chosen.replace("_", "").isalnum():
            raise DatabaseUrlError(f"{where}: schema must be a plain name")
        return cls(
            url=url,
            kind="postgresql",
            host=parts.hostname,
            port=port,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            dbname=dbname,
            schema=chosen,
            options=tuple(libpq.items()),
            pooling=_pooling(where, ours),
            setting=setting,
        )

    @property
    def events_table(self) -> str:
        if self.kind == "sqlite":
            return "stored_events"
        return f"{self.schema}.{APPLICATION_NAME.lower()}_events"

    @property
    def where(self) -> str:
        """Host, port and database, for messages (no user, no password)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    # Sessions and pooling.

    def is_pooled(self) -> bool:
        """Whether connections may go through a pooler that hands each transaction to
        another server session (PgBouncer in transaction mode, Supabase's and Neon's
        pooled endpoints): nothing the ledger sends may then rely on a session."""
        if self.kind != "postgresql":
            return False
        if self.pooling != "auto":
            return self.pooling == "pooled"
        return _probed(self, "pooled", self._probe_pooler)

    @property
    def session(self) -> Database | None:
        """Where the ledger may hold a session (LISTEN, session advisory locks): the
        direct URL, else this URL if it is not pooled, else nowhere."""
        if self.kind != "postgresql":
            return None
        if self.direct is not None:
            return self.direct
        return None if self.is_pooled() else self

    def check_direct(self) -> None:
        """Raise DatabaseUrlError (one line) when the direct URL goes through a
        transaction-mode pooler; checked once per process."""
        if self.direct is None:
            return
        direct = self.direct
        if _probed(direct, "transaction pooler", direct._probe_transaction_pooler):
            raise DatabaseUrlError(
                f"{direct.setting} reaches {direct.where} through a transaction-mode pooler "
                "(two sessions shared one server connection): give the direct endpoint (or "
                "a session-mode pooler) there, and the pooled one as the main URL"
            )

    def _probe_pooler(self) -> bool:
        # A pooler answers the client's start-up itself, so the backend pid libpq was
        # given is not the server session's (PgBouncer, Supavisor, pgcat, Odyssey).
        with self._raw_connect() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            return row is None or row[0] != conn.info.backend_pid

    def _probe_transaction_pooler(self) -> bool:
        """True when two open sessions are served by the same server connection, or one
        session by two: a pooler that does not keep a session on one server connection."""
        if not self._probe_pooler():
            return False
        with self._raw_connect() as first, self._raw_connect() as second:
            pids = [
                conn.execute("SELECT pg_backend_pid()").fetchone()
                for conn in (first, second, first)
            ]
        return pids[0] == pids[1] or pids[0] != pids[2]

    # Connections.

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg.connect's keyword arguments: the URL's parts and libpq options."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            **dict(self.options),
        }

    def prepare_threshold(self) -> int | None:
        """psycopg's automatic prepare: off (None) through a pooler, where a named
        prepared statement may meet another session, or outlive its own."""
        return None if self.is_pooled() else 5

    def connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        """A plain psycopg connection to this PostgreSQL database."""
        conn = self._raw_connect(autocommit)
        conn.prepare_threshold = self.prepare_threshold()
        return conn

    def _raw_connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(
                **self.connect_kwargs(), autocommit=autocommit, prepare_threshold=None
            )
        except psycopg.Error as error:
            reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise LedgerUnavailable(
                f"cannot reach PostgreSQL at {self.where} as {self.user!r}: {reason}"
            ) from None

    # The eventsourcing library's settings.

    def recorder_env(self, defaults: dict[str, str]) -> dict[str, str]:
        """Settings for a recorder of the ledger's own beside the events (the read model's,
        the worker's tracking): `defaults`, then the library's settings a deployment set
        in the environment (POSTGRES_*, SQLITE_*), then this database; no table created."""
        tuned = {k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "SQLITE_"))}
        return {**defaults, **tuned, **self.persistence_env(create_table=False)}

    def persistence_env(self, create_table: bool) -> dict[str, str]:
        """The eventsourcing library's persistence settings for this database: on
        PostgreSQL the ledger's factory (adapters/postgres/factory.py), which passes the
        libpq options to the library's pool and keeps it pooler-safe."""
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.path
                if self.path != ":memory:"
                else "file::memory:?cache=shared",
                "CREATE_TABLE": "y" if create_table else "n",
            }
        return {
            "PERSISTENCE_MODULE": "adapters.postgres.factory:LedgerPostgresFactory",
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_LIBPQ_OPTIONS": urlencode(
                {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, **dict(self.options)}
            ),
            "POSTGRES_POOLED": "y" if self.is_pooled() else "n",
            "CREATE_TABLE": "y" if create_table else "n",
        }

    # Tables.

    @contextmanager
    def creating_tables(self) -> Iterator[psycopg.Connection[tuple[object, ...]] | None]:
        """Hold the lock under which one process at a time opens the database and creates
        tables: concurrent DDL fails in PostgreSQL ("tuple concurrently updated"), and
        switching a new SQLite file to WAL fails at once ("database is locked") while
        another process opens it.

        PostgreSQL: yields a connection (the direct URL's, if any) in a transaction that
        holds a transaction-scoped advisory lock, so that it works through a transaction
        pooler too and ends with the transaction whatever happens. DDL goes on other
        connections (it must commit before the lock goes)."""
        if self.kind == "postgresql":
            with (self.direct or self).connect(autocommit=False) as conn:
                conn.execute(DDL_LOCK_SQL, self.ddl_lock_keys)
                yield conn
            return
        if self.path == ":memory:":
            yield None
            return
        with open(f"{self.path}.open-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield None

    @property
    def ddl_lock_keys(self) -> tuple[int, int]:
        """The keys of the transaction-scoped advisory lock around this schema's DDL."""
        return DDL_LOCK_NAMESPACE, zlib.crc32(self.schema.encode()) & 0x7FFF_FFFF

    def missing_tables(self, conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
        """Which of these tables of the ledger's schema do not exist (PostgreSQL)."""
        rows = conn.execute(
            "SELECT name FROM unnest(%s::text[]) AS name "
            "WHERE to_regclass(quote_ident(%s) || '.' || quote_ident(name)) IS NULL",
            (names, self.schema),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def missing_tables_error(self, missing: list[str]) -> LedgerUnavailable:
        """The one line for tables that are missing while table creation is off."""
        names = ", ".join(f"{self.schema}.{name}" for name in missing)
        return LedgerUnavailable(
            f"table creation is off (LESSON_LEDGER_CREATE_TABLES=false) and {names} "
            f"{'does' if len(missing) == 1 else 'do'} not exist in {self.where}: run "
            "`lesson-ledger db migrate` as the role that owns the schema"
        )


def unused_on_sqlite(database: Database, settings: DatabaseSettings | None = None) -> list[str]:
    """The direct and read URL settings given for a SQLite database: it has neither (they
    are PostgreSQL's), so they are not used; said at `serve`'s start, not refused (a copy
    of a database opened with a PostgreSQL deployment's `.env` must still open)."""
    if database.kind != "sqlite":
        return []
    settings = settings or DatabaseSettings()
    given = (
        (DIRECT_URL_SETTING, settings.direct_database_url),
        (READ_URL_SETTING, settings.read_database_url),
    )
    return [setting for setting, url in given if url]


def redacted(url: str) -> str:
    """The URL with its password (if any, also as a `password=` option) as `***`: safe
    to log or print."""
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _split_options(where: str, query: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ledger's own options and the libpq ones (checked by libpq: an unknown one is
    refused, named)."""
    ours: dict[str, str] = {}
    libpq: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        (ours if name in _LEDGER_OPTIONS else libpq)[name] = value
    try:
        make_conninfo("", **libpq)
    except psycopg.ProgrammingError as error:
        raise DatabaseUrlError(
            f"{where}: {one_line(error)} (the query string takes libpq's connection "
            "options, schema and pooled)"
        ) from None
    return ours, libpq


def _pooling(where: str, ours: dict[str, str]) -> str:
    pooled = ours.get("pooled", "auto").lower()
    if "pgbouncer" in ours and ours["pgbouncer"].lower() in _TRUE:
        pooled = "true"
    if pooled == "auto":
        return "auto"
    if pooled in _TRUE:
        return "pooled"
    if pooled in _FALSE:
        return "direct"
    raise DatabaseUrlError(f"{where}: pooled must be true, false or auto, not {pooled!r}")


_PROBES: dict[tuple[str, tuple[Any, ...]], bool] = {}
_PROBES_LOCK = threading.Lock()


def _probed(database: Database, what: str, probe: Any) -> bool:
    """A probe's answer, once per process for each server and role (not per schema)."""
    key = (what, (database.host, database.port, database.dbname, database.user, database.options))
    with _PROBES_LOCK:
        if key in _PROBES:
            return _PROBES[key]
    answer = bool(probe())
    with _PROBES_LOCK:
        _PROBES[key] = answer
    return answer
