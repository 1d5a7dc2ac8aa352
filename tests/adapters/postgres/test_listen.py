"""Waking a follower by LISTEN (adapters/postgres/listen.py)."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import psycopg

from adapters.postgres.listen import ListenWakeup
from adapters.storage.database import Database
from tests.support.stores import POSTGRES_URL, require_postgres

DEADLINE = 30.0


def test_a_forked_child_closing_it_leaves_the_parent_listening() -> None:
    """A worker forked after its parent began to listen, closing what it inherited at
    its end: the parent's session goes on, and a notification wakes it."""
    require_postgres()
    channel = f"test_wake_{uuid.uuid4().hex[:12]}"
    wakeup = ListenWakeup(Database.from_url(POSTGRES_URL), channel)
    wakeup.open()
    try:
        child = multiprocessing.get_context("fork").Process(target=wakeup.close)
        child.start()
        child.join(DEADLINE)
        assert child.exitcode == 0
        with psycopg.connect(POSTGRES_URL, autocommit=True) as other:
            other.execute(f"NOTIFY {channel}")

        began = time.monotonic()
        wakeup.wait(DEADLINE)  # raised here when the child had ended the session
        assert time.monotonic() - began < DEADLINE, "the notification never woke it"
    finally:
        wakeup.close()
