"""The log's pages shared by a server process's change streams (projections/changes.py),
on SQLite and PostgreSQL: each page read once while kept, the same events as the log's
own read; a read that fails is not kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from projections.changes import SharedPages
from tests.support.projections import read_model, write_requests
from tests.support.stores import Store


def test_threads_asking_for_one_page_get_one_read_of_it(store: Store) -> None:
    ledger = store.open()
    head = write_requests(ledger, 30)
    with read_model(store, ledger) as model:
        reads: list[int] = []
        read_page = model.log.page

        def counted(after: int, upto: int | None = None, page_size: int = 200) -> Any:
            reads.append(after)
            return read_page(after, upto, page_size)

        model.log.page = counted  # type: ignore[method-assign]
        shared = SharedPages(model.log)
        with ThreadPoolExecutor(8) as threads:
            pages = list(threads.map(lambda _: shared.page(0, head, 10), range(8)))

        assert reads == [0]
        assert all(page is pages[0] for page in pages)
        assert pages[0] is not None and pages[0].ids == read_page(0, head, 10).ids  # type: ignore[union-attr]
        shared.page(10, head, 10)
        assert reads == [0, 10]


def test_a_read_that_fails_is_read_again(store: Store) -> None:
    ledger = store.open()
    head = write_requests(ledger, 3)
    with read_model(store, ledger) as model:
        read_page, failures = model.log.page, [OSError("the database went away")]

        def failing_once(after: int, upto: int | None = None, page_size: int = 200) -> Any:
            if failures:
                raise failures.pop()
            return read_page(after, upto, page_size)

        model.log.page = failing_once  # type: ignore[method-assign]
        shared = SharedPages(model.log)
        with pytest.raises(OSError, match="went away"):
            shared.page(0, head)
        again = shared.page(0, head)
        assert again is not None and len(again.events) == 3
