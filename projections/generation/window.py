"""The generation dispatcher's bookkeeping: one job per requested attempt, and the window
of the log that is finished, whatever order the jobs finish in."""

from __future__ import annotations

import threading

from projections.generation.jobs import Job

__all__ = ["Job", "Window"]


class Window:
    """Which part of the log is finished, for a dispatcher that hands out attempts in log
    order and gets them back in any order.

    `position` is the highest notification id below which everything is finished: every
    event up to it was either not a request (nothing to do) or a request whose attempt
    is finished. Ids have gaps and only requests are tracked, so it is one less than the
    lowest unfinished request, or everything read when none is unfinished.
    """

    def __init__(self, position: int) -> None:
        self._read = position
        self._unfinished: set[int] = set()
        self._lock = threading.Lock()

    def started(self, notification_id: int) -> None:
        """A request at this id was handed out (call before anyone can finish it)."""
        with self._lock:
            self._unfinished.add(notification_id)
            self._read = max(self._read, notification_id)

    def read(self, upto: int) -> None:
        """Every request up to `upto` has been handed out."""
        with self._lock:
            self._read = max(self._read, upto)

    def finished(self, notification_id: int) -> None:
        with self._lock:
            self._unfinished.discard(notification_id)

    @property
    def read_upto(self) -> int:
        with self._lock:
            return self._read

    @property
    def unfinished(self) -> int:
        with self._lock:
            return len(self._unfinished)

    @property
    def position(self) -> int:
        with self._lock:
            if self._unfinished:
                return min(self._unfinished) - 1
            return self._read
