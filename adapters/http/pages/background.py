"""Work started from a page (a verify of the read model, of the log's tree) in a thread of
this server process; the page shows its progress and then its result."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Run(Generic[T]):
    """One run: when it started and ended, how far it got, and what it found."""

    started_at: datetime
    total: int = 0
    """How much there is to do (0: not known, the page shows no fraction)."""
    done_count: int = 0
    finished_at: datetime | None = None
    result: T | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def count(self, done: int) -> None:
        """How much is done so far (an `on_progress` for the work)."""
        self.done_count = done

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_count / self.total) if self.total else 0.0


def started(name: str, work: Callable[[Run[T]], T], total: int = 0) -> Run[T]:
    """`work` begun in a daemon thread; it may count its progress (`run.count`). An
    error is kept for the page (one line), never raised: the server goes on."""
    run: Run[T] = Run(datetime.now(UTC), total=total)

    def go() -> None:
        try:
            run.result = work(run)
        except Exception as error:
            run.error = f"{type(error).__name__}: {error}"
        finally:
            run.finished_at = datetime.now(UTC)
            run.done.set()

    threading.Thread(target=go, name=name, daemon=True).start()
    return run


def running(run: Run[Any] | None) -> bool:
    return run is not None and not run.done.is_set()
