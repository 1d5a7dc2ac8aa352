"""The eventsourcing library's PostgreSQL factory as the ledger uses it: every connection
of the library's pool gets the URL's libpq options (`sslmode`, `application_name`, ...),
and through a transaction pooler the pool keeps no session state.

Chosen by `Database.persistence_env` (PERSISTENCE_MODULE), which also passes the options
(POSTGRES_LIBPQ_OPTIONS, URL-encoded) and whether the URL is pooled (POSTGRES_POOLED).
Through a pooler the pool's connections have psycopg's automatic prepare off (a named
prepared statement would meet other sessions, or outlive its own), and skip the
library's `SET idle_in_transaction_session_timeout` on connect (a SET outside a
transaction lands on whichever server session the pooler picked; the pooler's own
`idle_transaction_timeout` is the place for it).

A process forked after the pool opened (a server preloading the ledger, then forking its
workers) gets a pool of its own, opened at its first use: the inherited pool's sessions
are the parent's (two processes on one session corrupt it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from eventsourcing.postgres import ConnectionPool, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType, strtobool
from psycopg import Connection
from psycopg.rows import DictRow

from adapters.forking import in_forked_children, left_to_the_parent


class LedgerPostgresFactory(PostgresFactory):
    """PostgresFactory whose pool passes the URL's libpq options, pooler-safe when
    `pooled` (see the module docstring)."""

    POSTGRES_LIBPQ_OPTIONS = "POSTGRES_LIBPQ_OPTIONS"
    POSTGRES_POOLED = "POSTGRES_POOLED"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.pooled = strtobool(self.env.get(self.POSTGRES_POOLED) or "no")
        options = dict(
            parse_qsl(self.env.get(self.POSTGRES_LIBPQ_OPTIONS) or "", keep_blank_values=True)
        )
        self._pool_settings = _pool_settings(self.datastore, options, self.pooled)
        self.datastore.pool = ConnectionPool(**self._pool_settings)
        in_forked_children(self._forget_parents)

    def _forget_parents(self) -> None:
        """In a forked child: an open pool's sessions and threads are the parent's; the
        datastore opens a new one at its first use (a closed one stays closed)."""
        inherited = self.datastore.pool
        if not inherited.closed:
            left_to_the_parent(inherited)
            self.datastore.pool = ConnectionPool(**self._pool_settings)


def _pool_settings(
    datastore: PostgresDatastore, options: dict[str, str], pooled: bool
) -> dict[str, Any]:
    """The library's pool (not opened yet) as the ledger makes it again: the same but for
    the options and, when pooled, the configure step and psycopg's prepare."""
    built = datastore.pool
    assert isinstance(built.kwargs, dict)  # as PostgresDatastore builds it
    kwargs: dict[str, Any] = {**built.kwargs, **options}
    if pooled:
        kwargs["prepare_threshold"] = None
    built.close()  # never opened: nothing to close but its bookkeeping
    return dict(
        get_password_func=built.get_password_func,
        connection_class=Connection[DictRow],
        kwargs=kwargs,
        min_size=built.min_size,
        max_size=built.max_size,
        open=False,
        configure=_autocommit if pooled else datastore.after_connect_func(),
        timeout=built.timeout,
        max_waiting=built.max_waiting,
        max_lifetime=built.max_lifetime,
        check=ConnectionPool.check_connection if datastore.pre_ping else None,
    )


def _autocommit(conn: Connection[Any]) -> None:
    conn.autocommit = True
