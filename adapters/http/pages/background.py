"""Work started from a page (a verify of the read model, of the log's tree) in a thread of
the server process that was asked; its progress, then its result, kept in the database
(adapters/storage/page_runs.py), so that the page shows it from every server process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from adapters.storage.page_runs import BEAT_SECONDS, PageRuns
from domain.errors import one_line

T = TypeVar("T")
Count = Callable[[int], None]
"""How much is done so far (an `on_progress` for the work)."""

log = logging.getLogger("lesson_ledger.pages")


def start_run(
    runs: PageRuns,
    name: str,
    work: Callable[[Count], T],
    as_json: Callable[[T], dict[str, Any]],
    total: int = 0,
) -> bool:
    """`work` begun in a daemon thread, unless a run of `name` is under way in any
    process (False). Its result is kept as `as_json` makes it; an error is kept for the
    page (one line), never raised: the server goes on."""
    run_id = runs.start(name, total)
    if run_id is None:
        return False
    threading.Thread(
        target=_run, args=(runs, name, run_id, work, as_json), name=name, daemon=True
    ).start()
    return True


class _Progress:
    """How far the work got, as it counts (read by the beat)."""

    def __init__(self) -> None:
        self.done = 0

    def count(self, done: int) -> None:
        self.done = done


def _run(
    runs: PageRuns,
    name: str,
    run_id: str,
    work: Callable[[Count], T],
    as_json: Callable[[T], dict[str, Any]],
) -> None:
    progress, finished = _Progress(), threading.Event()
    beating = threading.Thread(
        target=_beat,
        args=(runs, name, run_id, progress, finished),
        name=f"{name}-beat",
        daemon=True,
    )
    beating.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        result = as_json(work(progress.count))
    except Exception as failed:
        error = f"{type(failed).__name__}: {one_line(failed)}"
    finally:
        finished.set()
        beating.join()
    try:
        runs.finish(name, run_id, progress.done, result, error)
    except Exception as lost:  # the database is away: the run will show as interrupted
        log.warning("%s: its result could not be kept: %s", name, one_line(lost))


def _beat(
    runs: PageRuns, name: str, run_id: str, progress: _Progress, finished: threading.Event
) -> None:
    """Every `BEAT_SECONDS` until the work ends: it goes on, this far."""
    while not finished.wait(BEAT_SECONDS):
        try:
            runs.beat(name, run_id, progress.done)
        except Exception as missed:  # one beat missed; the next may land
            log.warning("%s: progress not kept: %s", name, one_line(missed))
