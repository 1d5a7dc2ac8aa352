"""Where a worker process's attempts run: one asyncio event loop in a thread of its own,
each attempt a task waiting on the model (hundreds at once cost no thread each), and a
small pool of threads for the ledger's calls, which are synchronous (a database round
trip each): `db_threads` of them, not one per attempt in flight.

Whoever hands out attempts (the log dispatcher on SQLite, the job claimer on PostgreSQL)
submits coroutines from its own thread and gets a concurrent Future back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_DB_THREADS = 4


class Runtime:
    """An event loop thread and a database thread pool; `close()` ends both."""

    def __init__(self, db_threads: int = DEFAULT_DB_THREADS) -> None:
        if db_threads < 1:
            raise ValueError(f"db_threads must be at least 1, not {db_threads}")
        self.loop = asyncio.new_event_loop()
        self._db = ThreadPoolExecutor(db_threads, thread_name_prefix="generation-db")
        self._thread = threading.Thread(target=self._run, name="generation-loop", daemon=True)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Run the coroutine as a task of the loop (from any other thread)."""

        async def tracked() -> T:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await coroutine
            finally:
                self._tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(tracked(), self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run the coroutine in the loop and wait for its result (from another thread)."""
        return self.submit(coroutine).result(timeout)

    async def db(self, call: Callable[[], T]) -> T:
        """A synchronous (database) call, in the pool, awaited from the loop."""
        return await self.loop.run_in_executor(self._db, call)

    def cancel_all(self) -> None:
        """Cancel every task running in the loop (from any thread): what they hold is left
        unfinished, for another worker (or this one, later) to take up."""

        def cancel() -> None:
            for task in list(self._tasks):
                task.cancel()

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(cancel)

    def close(self, before: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run `before` in the loop (e.g. closing the generator), then stop the loop and
        the pool; idempotent."""
        if self.loop.is_closed():
            return
        if before is not None and self._thread.is_alive():
            with suppress(Exception):  # closing is best effort; nothing is lost here
                self.call(before(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
        self._db.shutdown(wait=False, cancel_futures=True)
