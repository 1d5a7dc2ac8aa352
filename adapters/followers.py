"""The projections' followers (the read model, the log's tree) in a process of their own.

On PostgreSQL `lesson-ledger serve` runs them here rather than in its request processes:
there they took the GIL from the requests at every page (decision record 0042).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from adapters import logs
from adapters.audit.ledger_audit import open_audit
from adapters.eventstore import open_ledger
from adapters.read_model import open_read_model
from adapters.settings import Settings
from adapters.storage.database import Database

STOP_WITHIN_S = 30.0
PARENT_CHECK_S = 1.0


@contextmanager
def following_apart() -> Iterator[None]:
    """Run the followers in a child process while the block runs; stop it afterwards.
    The child reads the same settings (LESSON_LEDGER_*) from the environment it inherits,
    and imports only what following needs (not the command line)."""
    command = [sys.executable, "-m", "adapters.followers", str(os.getpid())]
    process = subprocess.Popen(command)
    try:
        yield
    finally:
        _stop(process)


def follow(url: str, checkpoint_every: float | None, log_level: str, parent: int) -> None:
    """Follow until SIGTERM or SIGINT, or until the parent is gone (killed with SIGKILL,
    it cannot say so): the followers stop and release their locks for a successor."""
    logs.configure(log_level)
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    database = Database.from_url(url)
    ledger = open_ledger(database)
    read_model = open_read_model(database, ledger=ledger)
    audit = open_audit(database, ledger)
    followers = [read_model.start_following(), audit.start_following(checkpoint_every)]
    try:
        while not stopped.wait(PARENT_CHECK_S) and os.getppid() == parent:
            pass
    finally:
        for follower in followers:
            follower.stop()
        audit.close()
        read_model.close()
        ledger.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_WITHIN_S)


if __name__ == "__main__":
    settings = Settings()
    follow(
        settings.database_url,
        settings.checkpoint_every_seconds,
        settings.log_level,
        int(sys.argv[1]),
    )
