"""The PostgreSQL side of `SqlStore` (the adapters' own small tables): a forked child runs
its statements on sessions of its own."""

from __future__ import annotations

import multiprocessing
from multiprocessing.queues import Queue

from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from tests.support.stores import POSTGRES_URL, require_postgres

DEADLINE = 30.0
BACKEND = "SELECT pg_backend_pid()"


def _backend_in_child(store: SqlStore, results: Queue[int]) -> None:
    results.put(store.run(BACKEND)[0][0])


def test_a_forked_child_runs_statements_on_a_session_of_its_own() -> None:
    """A server forking workers after opening its store: the child never runs a statement
    on the parent's pooled session (two processes on one session corrupt it), and the
    parent's goes on."""
    require_postgres()
    store = SqlStore(Database.from_url(POSTGRES_URL), pool_size=1)
    try:
        parents = store.run(BACKEND)[0][0]  # the pool's one session, idle at the fork
        context = multiprocessing.get_context("fork")
        results: Queue[int] = context.Queue()
        child = context.Process(target=_backend_in_child, args=(store, results))
        child.start()
        childs = results.get(timeout=DEADLINE)
        child.join(DEADLINE)

        assert child.exitcode == 0
        assert childs != parents
        assert store.run(BACKEND)[0][0] == parents
    finally:
        store.close()
