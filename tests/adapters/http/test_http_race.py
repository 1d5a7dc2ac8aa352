"""The calendar front end's race, for real: several clients post overlapping batches of
the same week's slots at once, to servers on PostgreSQL: one with two worker processes
and another beside it, so that at least two processes always take part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from tests.support.calendar_race import (
    PROVIDER,
    assert_one_request_per_slot,
    race_calendar,
    serving_pids,
)
from tests.support.served import serving_process
from tests.support.stores import Store


@pytest.fixture
def servers(postgres_store: Store, tmp_path: Path) -> Iterator[list[str]]:
    """`lesson-ledger serve --workers 2` and `serve --workers 1` on one database."""
    postgres_store.open()  # the tables exist before the workers start
    with (
        serving_process(postgres_store.url, tmp_path / "a.log", workers=2) as (first, _),
        serving_process(postgres_store.url, tmp_path / "b.log", workers=1) as (second, _),
    ):
        yield [first, second]


def test_overlapping_calendar_batches_leave_exactly_one_request_per_slot(
    servers: list[str], postgres_store: Store, tmp_path: Path
) -> None:
    sql = SqlStore(postgres_store.database)
    token = TokenStore(sql).create("provider", PROVIDER)[1]
    sql.close()

    responses = race_calendar(servers, token, clients=6, rounds=3)

    assert_one_request_per_slot(responses, postgres_store, servers[0], token)
    pids = serving_pids(tmp_path / "a.log", tmp_path / "b.log")
    assert len(pids) >= 2, "the requests were not served by several processes"
