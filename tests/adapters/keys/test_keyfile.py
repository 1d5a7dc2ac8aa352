"""The ledger's key file (adapters/keys/keyfile.py): made beside a SQLite database on first
start (mode 0600, one key however many processes start at once), required on PostgreSQL,
and one clear line for a file that cannot serve."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from adapters.http.app import create_app
from adapters.keys import keyfile
from adapters.keys.keyfile import (
    KEY_FILE_SETTING,
    KeyFileError,
    KeyFileNotConfigured,
    ensure_keys,
    open_keys,
    read_keys,
)
from adapters.settings import Settings
from tests.support.command_line import ANY_PORT, cli
from tests.support.served import serving_process
from tests.support.stores import POSTGRES_URL


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine where LESSON_LEDGER_KEY_FILE is not set."""
    monkeypatch.delenv(KEY_FILE_SETTING)


def test_beside_a_sqlite_database_the_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    first = open_keys(key_file=None, database_kind="sqlite", database_path=str(database))
    again = open_keys(key_file=None, database_kind="sqlite", database_path=str(database))

    path = tmp_path / "ledger.db.keys.json"
    assert (first.path, first.created, again.created) == (path, True, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first["hash_key"]) == 32 and again["hash_key"] == first["hash_key"]
    stored = json.loads(path.read_text())["keys"]
    assert base64.b64decode(stored["hash_key"]) == first["hash_key"]


def test_serve_says_once_that_it_made_the_key_file(tmp_path: Path, no_setting: None) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serving_process(url, tmp_path / "first.log") as (_, process):
        assert process.stdout is not None
        said = process.stdout.readline()
    with serving_process(url, tmp_path / "second.log") as (_, again):
        assert again.stdout is not None
        said_again = again.stdout.readline()

    assert said.startswith("Created the ledger's key file")
    assert said.strip().endswith(f"{tmp_path / 'ledger.db'}.keys.json")
    assert not said_again.startswith("Created the ledger's key file")


def test_a_database_moved_without_its_key_file_is_one_line_and_makes_none(
    tmp_path: Path, no_setting: None
) -> None:
    made = tmp_path / "made" / "ledger.db"
    made.parent.mkdir()
    assert cli("projections", "status", database_url=f"sqlite:///{made}").exit_code == 0
    moved = tmp_path / "moved" / "ledger.db"
    moved.parent.mkdir()
    moved.write_bytes(made.read_bytes())  # the database alone, not its key file
    url = f"sqlite:///{moved}"

    # It made a new key file beside the moved database, then said the key-encryption
    # key does not open its data keys; the new file stayed, in the right one's way.
    ran = cli("projections", "status", database_url=url)

    assert ran.exit_code == 3
    assert ran.stderr.strip() == (
        f"error: key file {moved}.keys.json does not exist, but {moved} holds data keys made "
        f"with one: put its key file there, or set {KEY_FILE_SETTING} to it"
    )
    assert not Path(f"{moved}.keys.json").exists()
    Path(f"{moved}.keys.json").write_bytes(Path(f"{made}.keys.json").read_bytes())
    assert cli("projections", "status", database_url=url).exit_code == 0


def _start_together(path: str, barrier: Any, answers: Any) -> None:
    barrier.wait()
    answers.put(base64.b64encode(ensure_keys(Path(path))["hash_key"]).decode())


def test_processes_starting_at_once_end_up_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.keys.json"
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(8), context.Queue()
    processes = [
        context.Process(target=_start_together, args=(str(path), barrier, answers))
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    keys = {answers.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)

    assert all(process.exitcode == 0 for process in processes)
    assert len(keys) == 1
    assert json.loads(path.read_text())["keys"]["hash_key"] in keys


BROKEN: list[tuple[str, str, str]] = [
    ("not JSON", '{"keys": {"hash_key": ', "is not valid JSON"),
    ("no keys object", '{"format": 1}', 'has no "keys" object'),
    ("lacks the key", '{"keys": {}}', "lacks the key 'hash_key'"),
    (
        "short key",
        json.dumps({"keys": {"hash_key": base64.b64encode(b"k" * 31).decode()}}),
        "not base64 of 32 bytes",
    ),
    ("not base64", '{"keys": {"hash_key": "***"}}', "not base64 of 32 bytes"),
    ("too deep", "[" * 30_000 + "]" * 30_000, "is nested too deeply: not a key file"),
]


@pytest.mark.parametrize(("case", "text", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_key_file_that_cannot_serve_is_one_line_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, text: str, message: str
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    monkeypatch.setenv(KEY_FILE_SETTING, str(path))
    database = tmp_path / "ledger.db"

    ran = cli("serve", *ANY_PORT, database_url=f"sqlite:///{database}")

    assert ran.exit_code == 3, ran
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(path) in line and message in line, case
    assert "a2tr" not in ran.stderr  # no key material (b"kkk" in base64)
    assert not database.exists()  # nothing started


def test_a_key_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "keys.json"
    folder.mkdir()
    with pytest.raises(KeyFileError, match="cannot be read: Is a directory"):
        read_keys(folder)
    with pytest.raises(KeyFileError, match=r"does not exist .*lesson-ledger keys init"):
        read_keys(tmp_path / "missing.json")


def test_keys_init_in_a_folder_that_does_not_exist_says_so(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "keys.json"

    ran = cli("keys", "init", str(path))

    assert ran.exit_code == 3
    assert ran.stderr.strip() == (
        f"error: key file {path} cannot be made: its folder {path.parent} does not exist"
    )


def test_postgresql_without_the_setting_is_one_line_naming_it(
    tmp_path: Path, no_setting: None
) -> None:
    with pytest.raises(KeyFileNotConfigured, match=KEY_FILE_SETTING):
        open_keys(key_file=None, database_kind="postgresql")
    ran = cli("serve", *ANY_PORT, database_url=POSTGRES_URL)
    assert ran.exit_code == 2
    assert len(ran.stderr.strip().splitlines()) == 1 and KEY_FILE_SETTING in ran.stderr


def test_the_server_does_not_half_start_without_its_keys(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    app = create_app(Settings(database_url=f"sqlite:///{database}", key_file=str(tmp_path / "no")))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(KeyFileError, match="does not exist"):
        asyncio.run(start())
    assert not database.exists()


def test_a_new_named_key_is_added_only_to_a_file_of_the_ledgers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, given = tmp_path / "ledger.db.keys.json", tmp_path / "given.json"
    before = ensure_keys(ours)["hash_key"]
    ensure_keys(given)
    # A later release needs one more key: adding it is one line in KEY_SIZES.
    monkeypatch.setitem(keyfile.KEY_SIZES, "student_kek", 32)

    completed = ensure_keys(ours)
    assert completed["hash_key"] == before and len(completed["student_kek"]) == 32
    with pytest.raises(KeyFileError, match="lacks the key 'student_kek'"):
        read_keys(given)  # a file the setting names is the operator's: never written
    ran = cli("keys", "init", str(given))
    assert (ran.exit_code, ran.stdout.strip()) == (0, f"added the keys student_kek to {given}")
    assert len(read_keys(given)["student_kek"]) == 32


def test_keys_init_makes_a_file_and_changes_no_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    made = cli("keys", "init", str(path))
    key = read_keys(path)["hash_key"]
    again = cli("keys", "init", str(path))

    assert made.stdout.strip() == f"created {path} with the keys {', '.join(keyfile.KEY_SIZES)}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.exit_code == 0 and "nothing changed" in again.stderr
    assert read_keys(path)["hash_key"] == key


def test_keys_init_makes_the_file_the_setting_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys init` with no PATH makes the file every process will read (the setting's)."""
    path = tmp_path / "keys.json"
    monkeypatch.setenv(KEY_FILE_SETTING, str(path))

    made = cli("keys", "init")

    assert made.exit_code == 0, made.stderr
    assert made.stdout.startswith(f"created {path} with the keys")
    assert len(read_keys(path)["key_encryption_key"]) == 32
    monkeypatch.delenv(KEY_FILE_SETTING)
    neither = cli("keys", "init")
    assert neither.exit_code == 2 and "PATH" in neither.stderr


def test_an_in_memory_database_has_keys_in_memory() -> None:
    keys = open_keys(key_file=None, database_kind="sqlite", database_path=":memory:")
    assert keys.path is None and len(keys["hash_key"]) == 32
