"""Hearing of data keys destroyed by other processes: LISTEN on the channel that
`DataKeys.destroy` NOTIFYs in the transaction that deletes them, on a session of its own
(the direct URL, or a URL that is not pooled), from a thread of its own.

While the session lasts the keys are told so, and may remember keys until an erasure is
heard of; when it fails they are told that too (back to their short cache) and the
listener connects again (decision record 0054). While it listens, a second thread reads
the keys' directory (every key, wrapped): when listening begins, after each erasure
heard of, and every `REREAD_SECONDS` (decision record 0055). The same session hears of
keys made, and tells the directory (decision record 0057).
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from typing import Any, Protocol

import psycopg
from psycopg import sql

from adapters.storage.database import Database
from domain.errors import LedgerUnavailable


class Told(Protocol):
    """What the listener tells: the data keys of one database."""

    @property
    def channel(self) -> str | None: ...

    @property
    def made_channel(self) -> str | None: ...

    def made(self, announced: str) -> None: ...

    def told(self, listening: bool) -> None: ...

    def heard(self) -> None: ...

    def read_directory(self) -> bool: ...


class KeyErasureListener:
    """LISTENs for destroyed keys and tells `keys`; `close()` stops it."""

    SLICE_SECONDS = 0.25  # how soon `close()` is noticed
    PROBE_SECONDS = 5.0  # a quiet session is asked for a reply this often: is it alive?
    RETRY_SECONDS = 1.0  # after a failed session, before connecting again
    REREAD_SECONDS = 600.0  # the directory is read again this often (news of keys missed)

    def __init__(self, session: Database, keys: Told) -> None:
        if keys.channel is None or keys.made_channel is None:
            raise ValueError("these keys announce no erasure (not PostgreSQL)")
        self._session = session
        self._keys = keys
        self._made = keys.made_channel
        self._hear_made = sql.SQL("LISTEN {}").format(sql.Identifier(self._made))
        self._statement = sql.SQL("LISTEN {}").format(sql.Identifier(keys.channel))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-erasures", daemon=True)
        self._read_wanted = threading.Event()
        self._reader = threading.Thread(target=self._read, name="key-directory", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._reader.start()

    def close(self) -> None:
        """Stop; the thread ends by itself within a slice (no wait: a command that ends
        should not pay for it)."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._session.connect() as conn:
                    conn.execute(self._hear_made)
                    conn.execute(self._statement)
                    self._keys.told(True)
                    self._read_wanted.set()
                    self._listen(conn)
            except (psycopg.Error, OSError, LedgerUnavailable):
                pass  # the database restarted, or the network failed: connect again
            finally:
                self._keys.told(False)
            self._stopping.wait(self.RETRY_SECONDS)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        probe_at = time.monotonic() + self.PROBE_SECONDS
        while not self._stopping.is_set():
            for notice in conn.notifies(timeout=self.SLICE_SECONDS):
                if notice.channel == self._made:
                    self._keys.made(notice.payload)
                    continue
                self._keys.heard()  # at once, not at the slice's end
                self._read_wanted.set()
            if time.monotonic() >= probe_at:
                # A session whose server went away unannounced would wait here for ever;
                # a round trip notices (LISTEN again changes nothing; what arrives
                # meanwhile waits for the next notifies()).
                conn.execute(self._statement)
                probe_at = time.monotonic() + self.PROBE_SECONDS

    def _read(self) -> None:
        """Read the directory when wanted (several erasures heard of meanwhile: once)."""
        read_at = time.monotonic() + self.REREAD_SECONDS
        while not self._stopping.is_set():
            if self._read_wanted.wait(self.SLICE_SECONDS) or time.monotonic() >= read_at:
                self._read_wanted.clear()
                read_at = time.monotonic() + self.REREAD_SECONDS
                # A failed read leaves the directory empty: the next erasure or re-read
                # tries again, and meanwhile keys are looked up as without it.
                with suppress(Exception):
                    self._keys.read_directory()
