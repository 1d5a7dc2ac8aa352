"""Fixtures, for every test: `store` (each test that takes it runs on SQLite and on
PostgreSQL), `postgres_store`, and `ledger` (opened on the store). What tests import is
in tests/support/, never here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from domain import LessonLedger
from tests.support.stores import Store, postgres_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each test that takes `store` runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        store = Store("sqlite", f"sqlite:///{tmp_path / 'ledger.db'}")
        yield store
        store.close()
        return
    yield from postgres_store()


@pytest.fixture(name="postgres_store")
def postgres_only_store() -> Iterator[Store]:
    """A PostgreSQL-only store, for what only PostgreSQL can show (transaction ids)."""
    yield from postgres_store()


@pytest.fixture
def ledger(store: Store) -> LessonLedger:
    return store.open()
