"""The ledger's key file: named secret keys, kept outside the database.

A JSON file, `{"format": 1, "keys": {"hash_key": "<base64>", ...}}`, mode 0600. Where it
is: the setting LESSON_LEDGER_KEY_FILE; without it, on the embedded SQLite default, the
file beside the database (`<database file>.keys.json`), which the ledger creates on first
start. On PostgreSQL the setting is required: every server process of one ledger, on
every host, must hold the same keys. A key the ledger needs and the file lacks is made
and added only where the file is the ledger's own (beside the database, or by `lesson-
ledger keys init`), never in a file the setting names. Writes happen under an exclusive
lock and land by an atomic rename, so processes starting together end up with one key.
See docs/decisions/0021-the-ledgers-key-file.md.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

KEY_SIZES: dict[str, int] = {
    "hash_key": 32,  # HMAC-SHA256 key: ids derived from clients' idempotency keys
    "key_encryption_key": 32,  # AES-256-GCM: wraps the data keys kept in the database
    "student_key": 32,  # HMAC-SHA256 key: the name of a student's data key, from their id
    "print_key": 32,  # keyed BLAKE2b (earlier HMAC-SHA256): commands' fingerprints
    "checkpoint_signing_key": 32,  # Ed25519 private key (seed): signs the log's checkpoints
    "session_key": 32,  # HMAC key: signs the audit pages' session cookies and CSRF tokens
}
"""Every named key the ledger uses and its size in random bytes; a new key is one line."""
OPTIONAL_KEYS = frozenset({"checkpoint_signing_key"})
"""Keys a file the setting names may lack: they can come from a setting of their own
(a signing key kept away from whoever holds the database, say)."""
KEY_FILE_SETTING = "LESSON_LEDGER_KEY_FILE"
FORMAT = 1
MAX_FILE_BYTES = 64 * 1024


class KeyFileError(Exception):
    """The key file cannot be read, is not a key file, or lacks a key (one line)."""


class KeyFileNotConfigured(ValueError):
    """No key file is set where the ledger cannot choose one itself (PostgreSQL)."""


@dataclass(frozen=True)
class LedgerKeys:
    """The keys read from a key file (or, for an in-memory database, made in memory)."""

    path: Path | None
    keys: Mapping[str, bytes] = field(repr=False)
    created: bool = False
    """True when this call created the file."""

    def __getitem__(self, name: str) -> bytes:
        return self.keys[name]


def open_keys(
    *, key_file: str | Path | None, database_kind: str, database_path: str = ""
) -> LedgerKeys:
    """The ledger's keys for a database: from the file the setting names (read only), or
    from the file beside a SQLite database (created, or completed, when needed)."""
    if key_file:
        return read_keys(Path(key_file).expanduser())
    if database_kind != "sqlite":
        raise KeyFileNotConfigured(
            f"on PostgreSQL set {KEY_FILE_SETTING} to the ledger's key file, the same for "
            "every server process (make one with `lesson-ledger keys init PATH`)"
        )
    if database_path == ":memory:":  # seen by this process only, as the database is
        return LedgerKeys(None, {name: secrets.token_bytes(n) for name, n in KEY_SIZES.items()})
    path = Path(f"{database_path}.keys.json")
    if not path.exists() and _holds_data_keys(database_path):
        # A database moved or copied without its key file: a new file would open none of
        # its students' data, and would stay beside it, in the way of the right one.
        raise KeyFileError(
            f"key file {path} does not exist, but {database_path} holds data keys made with "
            f"one: put its key file there, or set {KEY_FILE_SETTING} to it"
        )
    return ensure_keys(path)


def _holds_data_keys(database_path: str) -> bool:
    """Whether the SQLite database holds data keys (read only: nothing is made)."""
    if not Path(database_path).exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT 1 FROM data_keys LIMIT 1").fetchone() is not None
    except sqlite3.Error:  # no key table: a new database, or one from before sealing
        return False


def read_keys(path: Path) -> LedgerKeys:
    """Every named key from a file the ledger may not write; any missing is an error."""
    keys = _read(path)
    if keys is None:
        raise KeyFileError(
            f"key file {path} does not exist (make it with `lesson-ledger keys init {path}`)"
        )
    missing = [name for name in KEY_SIZES if name not in keys and name not in OPTIONAL_KEYS]
    if missing:
        raise KeyFileError(
            f"key file {path} lacks the key {missing[0]!r} "
            f"(add it with `lesson-ledger keys init {path}`)"
        )
    return LedgerKeys(path, keys)


def ensure_keys(path: Path) -> LedgerKeys:
    """The keys of a file that is the ledger's own: created with every named key if it
    does not exist, a named key it lacks made and added; existing keys never change."""
    keys = _read(path)
    if keys is not None and all(name in keys for name in KEY_SIZES):
        return LedgerKeys(path, keys)  # the usual start: no lock, no write
    with _locked(path):
        keys = _read(path)  # again, under the lock: another process may have written it
        created = keys is None
        current = dict(keys or {})
        missing = {name: size for name, size in KEY_SIZES.items() if name not in current}
        if missing:
            current.update({name: secrets.token_bytes(size) for name, size in missing.items()})
            _write(path, current)
    return LedgerKeys(path, current, created=created)


def added_keys(path: Path) -> tuple[bool, list[str]]:
    """`lesson-ledger keys init`: create the file or add the keys it lacks; whether it
    was created and which keys were added."""
    before = _read(path)
    ensured = ensure_keys(path)
    return ensured.created, [name for name in ensured.keys if name not in (before or {})]


def _read(path: Path) -> dict[str, bytes] | None:
    """The file's keys, or None if it does not exist; KeyFileError if it is not readable
    or not a key file. The message never shows key material."""
    try:
        with path.open("rb") as file:
            text = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise KeyFileError(f"key file {path} cannot be read: {error.strerror}") from None
    if len(text) > MAX_FILE_BYTES:
        raise KeyFileError(f"key file {path} is over {MAX_FILE_BYTES} bytes: not a key file")
    try:
        document = json.loads(text)
    except ValueError:
        raise KeyFileError(f"key file {path} is not valid JSON") from None
    except RecursionError:  # a key file is two levels deep
        raise KeyFileError(f"key file {path} is nested too deeply: not a key file") from None
    stored = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(stored, dict):
        raise KeyFileError(f'key file {path} has no "keys" object')
    return {name: _decoded(path, name, value) for name, value in stored.items()}


def _decoded(path: Path, name: str, value: object) -> bytes:
    size = KEY_SIZES.get(name)
    try:
        key = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        key = b""
    if not key or (size is not None and len(key) != size):
        wanted = f"{size} bytes" if size else "bytes"
        raise KeyFileError(f"key {name!r} in key file {path} is not base64 of {wanted}")
    return key


def _write(path: Path, keys: Mapping[str, bytes]) -> None:
    """Write to a fresh temporary file (O_EXCL, 0600), flush it to disk, then rename it
    over the file: a reader sees the old file or the new one, never half of one."""
    document = {
        "format": FORMAT,
        "note": "lesson-ledger's secret keys: keep this file, back it up apart from the "
        "database, and never change a key in it.",
        "keys": {name: base64.b64encode(key).decode() for name, key in sorted(keys.items())},
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, path)
        _sync_folder(path.parent)
    except OSError as error:
        raise KeyFileError(f"key file {path} cannot be written: {error.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `<key file>.lock`, across processes."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} cannot be made: its folder {path.parent} does not exist"
        ) from None
    except OSError as error:
        raise KeyFileError(f"key file {path} cannot be locked: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_keys(path: Path, changes: Mapping[str, bytes | None]) -> None:
    """Set (or, for None, remove) named keys in a key file, under its lock: how the
    key-encryption key is rotated (adapters/keys/rotation.py)."""
    with _locked(path):
        current = dict(_read(path) or {})
        for name, key in changes.items():
            if key is None:
                current.pop(name, None)
            else:
                current[name] = key
        _write(path, current)
