"""Opening the ledger from a database URL: the defaults, the options, and one clear line
when the URL is wrong or the server cannot be reached."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from adapters import DatabaseUrlError, open_ledger
from domain import LedgerUnavailable
from tests.support.stores import POSTGRES_URL, Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def a_request(request_id: str = "r-1") -> dict[str, str]:
    return {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-05",
        "time_slot": "08:30-09:00",
        "request_id": request_id,
        "actor": "alice",
    }


def test_without_a_url_the_setting_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESSON_LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    with open_ledger() as ledger:
        ledger.request_lesson(**a_request())
    assert (tmp_path / "from-env.db").exists()


def test_without_a_url_or_setting_the_embedded_default_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LESSON_LEDGER_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_ledger() as ledger:
        ledger.request_lesson(**a_request())
    assert (tmp_path / "lesson-ledger.db").exists()


def test_events_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_ledger(url) as ledger:
        lesson_id = ledger.request_lesson(**a_request()).lesson_id
    with open_ledger(url) as reopened:
        lesson = reopened.get_lesson(lesson_id)
    assert lesson is not None and lesson.request_id == "r-1"


def test_a_postgres_schema_is_created_with_its_tables_on_first_use(postgres_store: Store) -> None:
    schema = postgres_store.database.schema
    ledger = postgres_store.open()
    ledger.request_lesson(**a_request())
    tables = postgres_store.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    assert ("lessonledger_events",) in tables
    assert postgres_store.count_events() == 1  # OpenedByRequest


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/test", "unknown scheme 'mysql'"),
        ("sqlite://relative.db", "write sqlite:///relative/path.db"),
        ("sqlite:///no/such/folder/ledger.db", "does not exist"),
        ("postgresql://127.0.0.1:5432/test", "write postgresql://USER@HOST:PORT/DB"),
        ("postgresql://postgres@127.0.0.1:54x/test", "port is not a number"),
        ("postgresql://postgres@127.0.0.1/test?schemas=x", 'invalid connection option "schemas"'),
        ("postgresql://postgres@127.0.0.1/test?pooled=maybe", "pooled must be true, false"),
    ],
)
def test_a_wrong_url_is_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        open_ledger(url)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_password_never_appears_in_an_error() -> None:
    with pytest.raises(LedgerUnavailable) as raised:
        open_ledger("postgresql://postgres:s3cret@127.0.0.1:1/test?bogus=1")
    assert "s3cret" not in str(raised.value)


def test_an_unreachable_server_is_one_clear_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LedgerUnavailable) as raised:
        open_ledger(f"postgresql://postgres@127.0.0.1:{port}/test")
    message = str(raised.value)
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/test" in message
    assert "\n" not in message


def test_a_missing_database_is_one_clear_line(postgres_store: Store) -> None:
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(LedgerUnavailable, match='database "no_such_database" does not exist'):
        open_ledger(url)


def test_a_database_failure_during_a_command_is_ledger_unavailable(postgres_store: Store) -> None:
    ledger = postgres_store.open()
    ledger.request_lesson(**a_request())
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{postgres_store.database.schema}" CASCADE')

    with pytest.raises(LedgerUnavailable, match="the ledger's database failed"):
        ledger.request_lesson(**a_request("r-2"))
