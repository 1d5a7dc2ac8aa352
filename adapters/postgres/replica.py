"""A streaming replica of the ledger's primary: is it this primary's, and how far behind.

`ReplicaMonitor` checks once that the read URL is a replica of this primary (the same
system identifier, `pg_control_system()`), then samples in a thread, every `interval`
seconds, the primary's WAL position and the replica's replay position. The lag is how
long ago the primary first had WAL the replica has not replayed yet (0 when it has
replayed everything the primary had): unlike `now() - pg_last_xact_replay_timestamp()`
it does not grow while the primary is idle. A replica further behind than `max_lag`, or
down, is not read (`usable()` is False) until it is back within it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg

from adapters.storage.database import Database, DatabaseUrlError
from domain.errors import LedgerUnavailable, one_line

log = logging.getLogger("lesson_ledger.replica")
SAMPLE_SECONDS = 0.25
_SAMPLES_KEPT = 2000


@dataclass(frozen=True)
class ReplicaStatus:
    """The replica as last sampled: "serving" (reads go to it), "lagging" (further
    behind than allowed), "down" (unreachable), "refused" (not a replica of this
    primary); its lag in seconds when known."""

    state: str
    lag_seconds: float | None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "lag_seconds": self.lag_seconds, "detail": self.detail}


class ReplicaMonitor:
    """Samples a replica's lag behind its primary (see the module docstring)."""

    def __init__(
        self, primary: Database, replica: Database, *, interval: float = SAMPLE_SECONDS
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag = primary.replica_max_lag
        self.interval = interval
        self._samples: deque[tuple[float, int]] = deque(maxlen=_SAMPLES_KEPT)
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self._identified = False
        self._status = ReplicaStatus("down", None, "not sampled yet")
        self._stop = threading.Event()
        self._sampling = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> ReplicaMonitor:
        """Check the replica once (raising DatabaseUrlError if it is another primary's),
        then sample it in a daemon thread."""
        self.sample(at_start=True)
        self._thread = threading.Thread(target=self._run, name="replica-monitor", daemon=True)
        self._thread.start()
        return self

    def status(self) -> ReplicaStatus:
        return self._status

    def usable(self) -> bool:
        """Whether reads may go to the replica now."""
        return self._status.state == "serving"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._sampling:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self, *, at_start: bool = False) -> ReplicaStatus:
        """Sample the lag once; the new status. Thread-safe: a read that failed on the
        replica samples at once, beside the monitor's thread."""
        with self._sampling:
            return self._sample(at_start)

    def _sample(self, at_start: bool) -> ReplicaStatus:
        previous = self._status.state
        try:
            primary_lsn = self._primary_lsn()
        except (psycopg.Error, LedgerUnavailable) as error:
            # The primary's own outage is the server's to report (/ready); the replica
            # keeps its last status, since its lag cannot be told.
            self._drop("primary")
            log.debug("replica lag not sampled", extra={"error": one_line(error)})
            return self._status
        try:
            status = self._replica_status(primary_lsn)
        except DatabaseUrlError as refused:
            status = ReplicaStatus("refused", None, str(refused))
            if at_start:
                raise
        except (psycopg.Error, LedgerUnavailable) as error:
            self._drop("replica")
            status = ReplicaStatus("down", None, one_line(error))
        self._status = status
        if status.state != previous and not (at_start and status.state == "serving"):
            level = logging.INFO if status.state == "serving" else logging.WARNING
            log.log(level, f"read replica {status.state}", extra=status.as_json())
        return status

    def _primary_lsn(self) -> int:
        row = self._query("primary", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        lsn = int(row[0])
        self._samples.append((time.monotonic(), lsn))
        return lsn

    def _replica_status(self, primary_lsn: int) -> ReplicaStatus:
        if self._status.state == "refused":
            return self._status  # one line, never a loop of them
        if not self._identified:
            self._check_identity()
        row = self._query(
            "replica",
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn",
        )
        in_recovery, replayed = bool(row[0]), row[1]
        if not in_recovery:
            return ReplicaStatus("serving", 0.0, "the read URL is the primary itself")
        if replayed is None:
            return ReplicaStatus("lagging", None, "nothing replayed yet")
        lag = self._lag(int(replayed))
        if lag > self.max_lag:
            return ReplicaStatus("lagging", lag, f"{lag:.1f} s behind (allowed {self.max_lag:g} s)")
        return ReplicaStatus("serving", lag)

    def _lag(self, replayed: int) -> float:
        """Seconds since the primary first had WAL beyond `replayed` (0: none)."""
        while len(self._samples) > 1 and self._samples[0][1] <= replayed:
            self._samples.popleft()
        first_time, first_lsn = self._samples[0]
        if first_lsn <= replayed:
            return 0.0
        return max(0.0, time.monotonic() - first_time)

    def _check_identity(self) -> None:
        statement = "SELECT system_identifier FROM pg_control_system()"
        primary = self._query("primary", statement)[0]
        replica = self._query("replica", statement)[0]
        if primary != replica:
            raise DatabaseUrlError(
                f"{self.replica.setting} ({self.replica.where}) is not a replica of the "
                f"primary at {self.primary.where}: its system identifier is {replica}, the "
                f"primary's {primary}; reads stay on the primary"
            )
        self._identified = True

    def _query(self, which: str, statement: str) -> tuple[Any, ...]:
        conn = self._conns.get(which)
        if conn is None or conn.closed:
            database = self.primary if which == "primary" else self.replica
            conn = self._conns[which] = database.connect()
        row = conn.execute(statement).fetchone()
        assert row is not None
        return row

    def _drop(self, which: str) -> None:
        conn = self._conns.pop(which, None)
        if conn is not None:
            conn.close()
