"""Runner locks on SQLite: one active runner per table (or worker), across processes.

`flock` on a file next to the database; the kernel drops it when the process dies, so a
runner killed with SIGKILL frees it at once. An in-memory database, which only one
process can see, uses a lock of the process.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import ClassVar

from projections.view import RunnerLock

_RETRY_SECONDS = 0.05


class FileLock(RunnerLock):
    """An exclusive `flock` on `<database file>.<name>.lock`."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait or (stop is not None and stop.is_set()):
                    os.close(fd)
                    return False
                # flock has no timeout: poll, briefly, so that `stop` is noticed.
                if stop is not None:
                    stop.wait(_RETRY_SECONDS)
                else:
                    time.sleep(_RETRY_SECONDS)
                continue
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def is_taken(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class ProcessLock(RunnerLock):
    """For an in-memory SQLite database, which only one process can see anyway."""

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        with self._registry_lock:
            self._lock = self._locks.setdefault(name, threading.Lock())
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, *, wait: bool, stop: threading.Event | None = None) -> bool:
        if self._held:
            return True
        while not self._lock.acquire(timeout=_RETRY_SECONDS if wait else 0):
            if not wait or (stop is not None and stop.is_set()):
                return False
        self._held = True
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def is_taken(self) -> bool:
        return self._lock.locked()
