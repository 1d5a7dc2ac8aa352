"""The announcer of keys stored by appends (adapters/keys/announcing.py, decision record
0064): ids announced together, a moment later, from a thread of its own; those waiting
announced at close; a forked child announces its own ids alone."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from adapters.keys.announcing import Announcer
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from tests.support.stores import POSTGRES_URL, require_postgres

DEADLINE = 10.0
Listener = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def channel() -> str:
    return f"test_news_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def listener(channel: str) -> Iterator[Listener]:
    require_postgres()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        yield conn


@pytest.fixture
def announcer(channel: str) -> Iterator[Announcer]:
    require_postgres()
    sql = SqlStore(Database.from_url(POSTGRES_URL), pool_size=2)
    announcer = Announcer(sql, channel)
    yield announcer
    announcer.close()
    sql.close()


def heard(conn: Listener, count: int) -> list[list[str]]:
    """The next `count` notifications' ids (fails at the deadline)."""
    found: list[list[str]] = []
    for notice in conn.notifies(timeout=DEADLINE, stop_after=count):
        found.append(notice.payload.split("\n"))
    assert len(found) == count, f"heard {found} by the deadline"
    return found


def test_ids_announced_in_one_moment_go_in_one_notification(
    announcer: Announcer, listener: Listener
) -> None:
    announcer.announce(["a", "b"])
    announcer.announce(["c"])  # within the pause the first opened

    assert heard(listener, 1) == [["a", "b", "c"]]
    announcer.announce(["d"])
    assert heard(listener, 1) == [["d"]]


def test_ids_waiting_at_close_are_announced_by_it(announcer: Announcer, listener: Listener) -> None:
    announcer.announce(["a"])
    announcer.close()  # within the pause
    announcer.announce(["after"])  # closed: nothing more

    assert heard(listener, 1) == [["a"]]
    assert list(listener.notifies(timeout=0.2)) == []


def _announce_in_child(announcer: Announcer) -> None:
    announcer.announce(["child"])
    announcer.close()


def test_a_forked_child_announces_its_own_ids_alone(
    announcer: Announcer, listener: Listener
) -> None:
    """The parent's ids, waiting when it forks, are the parent's to announce."""
    announcer.announce(["parent"])
    child = multiprocessing.get_context("fork").Process(
        target=_announce_in_child, args=(announcer,)
    )
    child.start()
    child.join(DEADLINE)

    assert child.exitcode == 0
    assert sorted(heard(listener, 2)) == [["child"], ["parent"]]
