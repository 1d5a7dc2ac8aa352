"""The database a URL names: the embedded SQLite file or PostgreSQL.

`sqlite:///PATH` (relative) or `sqlite:////abs/path`, and
`postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]`. Without a URL the
setting LESSON_LEDGER_DATABASE_URL decides, else `sqlite:///./lesson-ledger.db`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg

from domain.errors import LedgerUnavailable

DEFAULT_DATABASE_URL = "sqlite:///./lesson-ledger.db"
DATABASE_URL_SETTING = "LESSON_LEDGER_DATABASE_URL"
# Serialises table creation across processes: concurrent CREATE TABLE IF NOT EXISTS
# in PostgreSQL fails with "tuple concurrently updated" (see NOTES-eventsourcing.md).
DDL_LOCK_KEY = 7_312_465_021
APPLICATION_NAME = "LessonLedger"
"""The eventsourcing application's name, which names its tables (`lessonledger_events`)."""


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

    @classmethod
    def from_url(cls, url: str | None = None) -> Database:
        url = url or os.environ.get(DATABASE_URL_SETTING) or DEFAULT_DATABASE_URL
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            return cls._sqlite(url, parts.netloc, parts.path)
        if parts.scheme in ("postgresql", "postgres"):
            return cls._postgresql(url)
        raise DatabaseUrlError(
            f"database URL {redacted(url)!r}: unknown scheme {parts.scheme!r}; use "
            "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
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
    def _postgresql(cls, url: str) -> Database:
        parts = urlsplit(url)
        try:
            port = parts.port or 5432
        except ValueError:
            raise DatabaseUrlError(
                f"database URL {redacted(url)!r}: the port is not a number"
            ) from None
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname or not parts.username:
            raise DatabaseUrlError(
                f"database URL {redacted(url)!r}: write postgresql://USER@HOST:PORT/DB"
            )
        options = parse_qs(parts.query)
        unknown = sorted(set(options) - {"schema"})
        if unknown:
            raise DatabaseUrlError(
                f"database URL {redacted(url)!r}: unknown option {unknown[0]!r} (only 'schema')"
            )
        schema = options.get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum():
            raise DatabaseUrlError(f"database URL {redacted(url)!r}: schema must be a plain name")
        return cls(
            url=url,
            kind="postgresql",
            host=parts.hostname,
            port=port,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            dbname=dbname,
            schema=schema,
        )

    @property
    def events_table(self) -> str:
        if self.kind == "sqlite":
            return "stored_events"
        return f"{self.schema}.{APPLICATION_NAME.lower()}_events"

    def recorder_env(self, defaults: dict[str, str]) -> dict[str, str]:
        """Settings for a recorder of the ledger's own beside the events (the read model's,
        the worker's tracking): `defaults`, then the library's settings a deployment set
        in the environment (POSTGRES_*, SQLITE_*), then this database; no table created."""
        tuned = {k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "SQLITE_"))}
        return {**defaults, **tuned, **self.persistence_env(create_table=False)}

    def persistence_env(self, create_table: bool) -> dict[str, str]:
        """The eventsourcing library's persistence settings for this database."""
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.path
                if self.path != ":memory:"
                else "file::memory:?cache=shared",
                "CREATE_TABLE": "y" if create_table else "n",
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_SCHEMA": self.schema,
            "CREATE_TABLE": "y" if create_table else "n",
        }

    @contextmanager
    def creating_tables(self) -> Iterator[psycopg.Connection[tuple[object, ...]] | None]:
        """Hold the lock under which one process at a time opens the database and creates
        tables: concurrent DDL fails in PostgreSQL ("tuple concurrently updated"), and
        switching a new SQLite file to WAL fails at once ("database is locked") while
        another process opens it. Yields the PostgreSQL connection holding the lock."""
        if self.kind == "postgresql":
            with self.connect() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
                try:
                    yield conn
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))
            return
        if self.path == ":memory:":
            yield None
            return
        with open(f"{self.path}.open-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield None

    def connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        """A plain psycopg connection to this PostgreSQL database."""
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                dbname=self.dbname,
                autocommit=autocommit,
                connect_timeout=5,
            )
        except psycopg.Error as error:
            reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise LedgerUnavailable(
                f"cannot reach PostgreSQL at {self.host}:{self.port}/{self.dbname} as "
                f"{self.user!r}: {reason}"
            ) from None


def redacted(url: str) -> str:
    """The URL with its password (if any) as `***`: safe to log or print."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
