"""Where the API's reads go: the read replica (LESSON_LEDGER_READ_DATABASE_URL) while it is
within its allowed lag, else the primary. Commands, the follower and the worker always
use the primary.

`open_reads(database, read_model, ledger)` gives a `ReadRouting`: `read(min_position,
timeout, query)` and `history(min_position, timeout, query)` run a query on the read
model or the ledger that has the command's position, after waiting (within `timeout`):
on the replica first, for at most the replica's allowed lag, then on the primary for the
rest. A replica that fails during a read: the primary answers it.
The read model's position on the replica is the replica's copy of the follower's stored
position; a lesson's history waits until the replica has replayed the command's event.
Without a read URL every read goes to the primary, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import psycopg
from eventsourcing.persistence import InfrastructureFactory, PersistenceError
from eventsourcing.utils import Environment
from psycopg import sql

from adapters.eventstore import event_store, open_read_only_ledger
from adapters.postgres.lessons_view import PostgresLessonsView
from adapters.postgres.replica import ReplicaMonitor, ReplicaStatus
from adapters.storage.database import Database
from domain.errors import LedgerUnavailable, one_line
from domain.ledger import LessonLedger
from domain.ports import StudentData
from projections.read_model import LessonsReadModel

log = logging.getLogger("lesson_ledger.reads")
T = TypeVar("T")
_REPLICA_FAILURES = (LedgerUnavailable, PersistenceError, psycopg.Error)
# A replica that went down answers a read in flight in about a second (the pool's wait
# for a connection), and then the primary does.
_REPLICA_POOL = {
    "POSTGRES_POOL_SIZE": "2",
    "POSTGRES_MAX_OVERFLOW": "8",
    "POSTGRES_CONNECT_TIMEOUT": "1",
}


class NotCaughtUp(LedgerUnavailable):
    """Neither the replica nor the primary reached a position within the time allowed."""

    def __init__(self, position: int, timeout: float, reached: int) -> None:
        super().__init__(
            f"the read model has not reached position {position} within {timeout:g} s "
            f"(it is at {reached}); try again"
        )


class Replica:
    """What reads from the replica use: its read model, its ledger (opened on first use:
    the replica may be down when the server starts) and its monitor."""

    def __init__(
        self,
        database: Database,
        read_model: LessonsReadModel,
        monitor: ReplicaMonitor,
        has_event: Callable[[int], bool],
        student_data: StudentData,
    ) -> None:
        self.database = database
        self.student_data = student_data
        self.read_model = read_model
        self.monitor = monitor
        self.has_event = has_event
        self._ledger: LessonLedger | None = None
        self._opening = threading.Lock()

    @property
    def ledger(self) -> LessonLedger:
        """The ledger on the replica, for histories (LedgerUnavailable while it is down)."""
        with self._opening:
            if self._ledger is None:
                self._ledger = open_read_only_ledger(self.database, self.student_data)
            return self._ledger

    def close(self) -> None:
        self.monitor.close()
        self.read_model.close()
        if self._ledger is not None:
            self._ledger.close()


class ReadRouting:
    """Chooses, for each read, the replica or the primary (see the module docstring).
    `on_read(source)` (e.g. a metric) is told which one answered."""

    def __init__(
        self, primary: LessonsReadModel, ledger: LessonLedger, replica: Replica | None = None
    ) -> None:
        self.primary = primary
        self.primary_ledger = ledger
        self.replica = replica
        self.on_read: Callable[[str], None] | None = None

    def status(self) -> ReplicaStatus | None:
        """The replica's status, None without a read URL."""
        return None if self.replica is None else self.replica.monitor.status()

    def read(
        self, min_position: int | None, timeout: float, query: Callable[[LessonsReadModel], T]
    ) -> T:
        """`query` on the read model that has `min_position` (the replica if it reaches
        it within its allowed lag, else the primary); NotCaughtUp when neither does
        within `timeout`. A replica that fails meanwhile: the primary answers."""
        deadline = time.monotonic() + timeout
        replica = self._usable_replica()
        if replica is not None:
            try:
                if min_position is None or replica.read_model.wait_for(
                    min_position, timeout=self._budget(replica, timeout)
                ):
                    return self._answer("replica", query, replica.read_model)
            except _REPLICA_FAILURES as error:
                self._failed(replica, error)
        if min_position is not None:
            remaining = max(0.0, deadline - time.monotonic())
            if not self.primary.wait_for(min_position, timeout=remaining):
                raise NotCaughtUp(min_position, timeout, self.primary.position())
        return self._answer("primary", query, self.primary)

    def history(
        self, min_position: int | None, timeout: float, query: Callable[[LessonLedger], T]
    ) -> T:
        """`query` on the replica's ledger once it has replayed the event at
        `min_position` (waiting at most the replica's allowed lag), else on the primary's,
        which has every committed event."""
        replica = self._usable_replica()
        if replica is not None:
            try:
                if min_position is None or _wait(
                    lambda: replica.has_event(min_position), self._budget(replica, timeout)
                ):
                    return self._answer("replica", query, replica.ledger)
            except _REPLICA_FAILURES as error:
                self._failed(replica, error)
        return self._answer("primary", query, self.primary_ledger)

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()

    def _usable_replica(self) -> Replica | None:
        replica = self.replica
        return replica if replica is not None and replica.monitor.usable() else None

    @staticmethod
    def _budget(replica: Replica, timeout: float) -> float:
        return min(timeout, replica.monitor.max_lag)

    def _answer(self, source: str, query: Callable[[Any], T], on: Any) -> T:
        answer = query(on)
        if self.on_read is not None:
            self.on_read(source)
        return answer

    @staticmethod
    def _failed(replica: Replica, error: BaseException) -> None:
        log.warning("read replica failed; the primary answers", extra={"error": one_line(error)})
        replica.monitor.sample()  # so that the next reads go to the primary at once


def open_reads(
    database: Database, read_model: LessonsReadModel, ledger: LessonLedger
) -> ReadRouting:
    """The reads of a server on `database`: through its replica if it has one (checked to
    be this primary's at once: DatabaseUrlError otherwise; a replica that is down only
    sends reads to the primary until it is back)."""
    if database.replica is None:
        return ReadRouting(read_model, ledger)
    monitor = ReplicaMonitor(database, database.replica).start()
    try:
        replica = _open_replica(database.replica, read_model, ledger, monitor)
    except BaseException:
        monitor.close()
        raise
    return ReadRouting(read_model, ledger, replica)


def _open_replica(
    replica: Database, primary: LessonsReadModel, ledger: LessonLedger, monitor: ReplicaMonitor
) -> Replica:
    if replica.pooling == "auto":
        # Not probed (it may be down now): read unprepared, which is safe behind any
        # pooler and costs a read little.
        replica = replace(replica, pooling="pooled")
    recorder: Any = event_store(ledger).recorder
    factory: Any = InfrastructureFactory.construct(
        Environment("Lessons", replica.recorder_env(_REPLICA_POOL))
    )
    view = ReplicaLessonsView(
        factory.datastore,
        database=replica,
        events_table=recorder.events_table_name,
        channel=recorder.channel_name,
    )
    model = LessonsReadModel(view, primary.log, primary.mapper)
    has_event = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE notification_id = %s)").format(
        sql.SQL(".").join([sql.Identifier(replica.schema), sql.Identifier(view.events_table)])
    )

    def replica_has_event(position: int) -> bool:
        try:
            with factory.datastore.get_connection() as conn:
                row = conn.execute(has_event, (position,)).fetchone()
        except Exception as error:  # down meanwhile: the primary answers
            log.debug("replica not read", extra={"error": one_line(error)})
            return False
        return bool(row and next(iter(row.values())))

    return Replica(replica, model, monitor, replica_has_event, ledger.student_data)


class ReplicaLessonsView(PostgresLessonsView):
    """The lessons view on the replica: queries only. Its position is read without the
    library's retries (ten, for a lost connection), so that a replica that went down
    fails a read at once and the primary answers it."""

    def _read_position(self, tracking_name: str) -> int | None:
        statement = sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
            sql.SQL(".").join(
                [sql.Identifier(self.datastore.schema), sql.Identifier(self.tracking_table_name)]
            )
        )
        with self.datastore.get_connection() as conn:
            row = conn.execute(statement, (tracking_name,)).fetchone()
        return None if row is None else int(row["notification_id"])


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` (2 ms, doubling to 50 ms) until it holds (True) or `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    return True
