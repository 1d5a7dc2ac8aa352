"""Fixtures, for every test: `store` (each test that takes it runs on SQLite and on
PostgreSQL), `postgres_store`, and `ledger` (opened on the store). What tests import is
in tests/support/, never here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.keys.keyfile import KEY_FILE_SETTING, ensure_keys
from domain import LessonLedger
from tests.support.browser import require_browser
from tests.support.stores import Store, postgres_store, sqlite_store


@pytest.fixture(scope="session", autouse=True)
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ledger's keys for every test (and the processes tests start): PostgreSQL needs
    a key file named by the setting; SQLite would make one beside each database."""
    path = tmp_path_factory.mktemp("keys") / "ledger.keys.json"
    ensure_keys(path)
    previous = os.environ.get(KEY_FILE_SETTING)
    os.environ[KEY_FILE_SETTING] = str(path)
    yield path
    if previous is None:
        del os.environ[KEY_FILE_SETTING]
    else:
        os.environ[KEY_FILE_SETTING] = previous


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each test that takes `store` runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield from sqlite_store(tmp_path)
        return
    yield from postgres_store()


@pytest.fixture(name="sqlite_store")
def sqlite_only_store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite-only store, for what only SQLite shows (no session can LISTEN there)."""
    yield from sqlite_store(tmp_path)


@pytest.fixture(name="postgres_store")
def postgres_only_store() -> Iterator[Store]:
    """A PostgreSQL-only store, for what only PostgreSQL can show (transaction ids)."""
    yield from postgres_store()


@pytest.fixture
def ledger(store: Store) -> LessonLedger:
    return store.open()


@pytest.fixture
def chromium() -> str:
    """Debian's chromium for the browser tests: skipped without one, failed under CI=true."""
    return require_browser()
