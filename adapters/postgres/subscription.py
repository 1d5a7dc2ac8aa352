"""`LedgerSubscription`: the library's LISTEN/NOTIFY subscription, which also reads again
every 0.1 s while committed events are held back by an older transaction.

Why a private hook is unavoidable here: eventsourcing's `PostgresSubscription` has no
public hook for "read again while committed events are held back by an older
transaction" (that transaction need not NOTIFY, so LISTEN alone could wait for ever). So
this class overrides its private `_pull` and `_listen`, and reads and writes the private
attributes they use. It is the only module that touches them: eventsourcing is pinned to
9.5.x (pyproject.toml), tests/test_postgres_recorder.py fails, naming the attribute, when
the installed library no longer has one, and this module must be checked against every
new release. See docs/decisions/0001-postgres-recorder-without-table-lock.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eventsourcing.persistence import Notification, ShutDown
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresSubscription
from psycopg.sql import SQL, Identifier


class SelectSettled(Protocol):
    """The recorder's `select_settled`: the settled notifications of a range, and
    whether committed ones were held back."""

    def __call__(
        self, start: int | None, limit: int, *, topics: Sequence[str], inclusive_of_start: bool
    ) -> tuple[list[Notification], bool]: ...


class LedgerSubscription(PostgresSubscription):
    """The library's LISTEN/NOTIFY subscription, which also reads again every 0.1 s while
    committed events are held back by an older transaction (that need not notify)."""

    _held_back = False  # set by the pull thread, which starts before __init__ returns

    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        select_settled: SelectSettled,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._select_settled = select_settled  # before the library starts the pull thread
        super().__init__(recorder=recorder, gt=gt, topics=topics)

    def _pull(self) -> None:
        while not self._has_been_stopped:
            self._has_been_notified.clear()
            notifications, self._held_back = self._select_settled(
                start=self._last_notification_id or 0,
                limit=self._select_limit,
                topics=self._topics,
                inclusive_of_start=False,
            )
            if notifications:
                try:
                    self._notifications_queue.put(notifications)
                except ShutDown:  # the subscription was stopped
                    break
                self._last_notification_id = notifications[-1].id
            if len(notifications) < self._select_limit:
                break

    def _listen(self) -> None:
        try:
            with self._recorder.datastore.get_connection() as conn:
                conn.execute(SQL("LISTEN {0}").format(Identifier(self._recorder.channel_name)))
                while not self._has_been_stopped and not self._thread_error:
                    notified = False
                    for _ in conn.notifies(timeout=0.1, stop_after=1):
                        notified = True
                    if notified or self._held_back:
                        self._has_been_notified.set()
        except BaseException as e:
            if self._thread_error is None:
                self._thread_error = e
            self.stop()
