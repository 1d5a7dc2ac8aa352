"""Keys stored by appends, announced from a thread of the process's own (decision record
0064): the ids of every key stored in the last moment in one notification, so that every
listening process adds them to its directory (decision record 0057).

An append does not announce its keys itself: a `NOTIFY` in its transaction takes
PostgreSQL's notification lock at commit and wakes every listening session, 150-200 us a
request. Announced here, a few times a second at most under load, a moment after their
commit. A process that ends without announcing (killed) leaves keys that others find
when they read their directory again (every 10 minutes): meanwhile they look those keys
up by id to open what they sealed, and meet their student with a key stored beside.
"""

from __future__ import annotations

import logging
import threading

from adapters.forking import in_forked_children
from adapters.storage.sqlstore import SqlStore
from domain.errors import LedgerUnavailable

log = logging.getLogger("lesson_ledger.keys")

MADE_PER_NOTICE = 200
"""Key ids announced in one notification (33 bytes each: PostgreSQL takes 8,000)."""
PAUSE_SECONDS = 0.05
"""How long ids wait to be announced together, once one waits."""
JOIN_SECONDS = 5.0
"""How long `close()` waits for a notification being sent (a database that does not
answer: the pool's own timeout is 10 s)."""


class Announcer:
    """Announces key ids on `channel`, together, from a thread started when the first
    waits; `close()` announces those still waiting."""

    def __init__(self, sql: SqlStore, channel: str) -> None:
        self._sql = sql
        self._channel = channel
        self._waiting: list[str] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._closing = threading.Event()
        in_forked_children(self._forget_parents)

    def announce(self, key_ids: list[str]) -> None:
        """Announce these ids soon (not in this thread)."""
        with self._changed:
            if self._closed:
                return
            self._waiting += key_ids
            # Started here, not at opening: most processes never store a key this way.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="key-news", daemon=True)
                self._thread.start()
            self._changed.notify()

    def close(self) -> None:
        """Announce what waits, here and now (once the thread has sent what it took);
        announce nothing more."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._closing.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=JOIN_SECONDS)
        with self._changed:
            waiting, self._waiting = self._waiting, []
        self._send(waiting)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
            # The ids of the requests that finish meanwhile go in the same notification.
            self._closing.wait(PAUSE_SECONDS)
            with self._changed:
                waiting, self._waiting = self._waiting, []
            self._send(waiting)

    def _forget_parents(self) -> None:
        """In a forked child: the parent's thread, lock and waiting ids are the parent's
        (its lock may have been held at the fork); the child starts its own thread."""
        self._waiting, self._thread = [], None
        self._changed = threading.Condition()

    def _send(self, key_ids: list[str]) -> None:
        for start in range(0, len(key_ids), MADE_PER_NOTICE):
            chunk = key_ids[start : start + MADE_PER_NOTICE]
            try:
                self._sql.run("SELECT pg_notify(%s, %s)", (self._channel, "\n".join(chunk)))
            except LedgerUnavailable as error:
                # The keys are stored: the directories' next read finds them.
                log.warning("keys made could not be announced: %s", error)
