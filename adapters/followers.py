"""The projections' followers (the read model, the log's tree) in a process of their own.

On PostgreSQL `lesson-ledger serve` runs them here rather than in its request processes:
there they took the GIL from the requests at every page (decision record 0042).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from types import FrameType

from adapters import logs
from adapters.audit.ledger_audit import open_audit
from adapters.eventstore import open_ledger
from adapters.read_model import open_read_model
from adapters.storage.database import Database

STOP_WITHIN_S = 30.0
PARENT_CHECK_S = 1.0


@contextmanager
def following_apart(url: str, checkpoint_every: float | None, log_level: str) -> Iterator[None]:
    """Run the followers in a child process while the block runs; stop it afterwards."""
    context = multiprocessing.get_context("spawn")  # nothing of the parent's threads
    process = context.Process(
        target=follow, args=(url, checkpoint_every, log_level, os.getpid()),
        name="lesson-ledger-followers", daemon=True,
    )  # fmt: skip
    process.start()
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


def _stop(process: BaseProcess) -> None:
    if process.pid is not None and process.is_alive():
        os.kill(process.pid, signal.SIGTERM)
    process.join(STOP_WITHIN_S)
    if process.is_alive():
        process.kill()
        process.join(STOP_WITHIN_S)
