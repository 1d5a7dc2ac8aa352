"""Work started at the same moment in threads of its own, every outcome kept."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_threads_together(work: Callable[[int], T], count: int, deadline: float = 120) -> list[T]:
    """`work(n)` for each n below `count`, each in a thread, all released at once by a
    barrier; their results in order of n. Fails if a thread is still running at the
    deadline (seconds) or if any raised (every error is kept, none lost)."""
    start = threading.Barrier(count)
    results: dict[int, T] = {}
    failures: list[BaseException] = []

    def run(number: int) -> None:
        try:
            start.wait(timeout=30)
            results[number] = work(number)
        except BaseException as error:  # counted, not lost
            failures.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=deadline)
    assert not any(t.is_alive() for t in threads), f"a thread did not finish in {deadline} s"
    assert failures == []
    return [results[n] for n in range(count)]
