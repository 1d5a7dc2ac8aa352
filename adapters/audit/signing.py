"""The checkpoint signing key: Ed25519 (`cryptography`), from the setting
LESSON_LEDGER_CHECKPOINT_SIGNING_KEY (the 32-byte private key as base64) or the ledger's
key file (`checkpoint_signing_key`, made beside the SQLite default on first start).

Whoever holds the database and this key can rewrite the log and sign the result: keep it
away from the database's writers where that matters (the setting, from a secrets
manager), and publish checkpoints outside the database (README, "Proving the history").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.keys.keyfile import KEY_FILE_SETTING, KeyFileError, KeyFileNotConfigured, open_keys
from adapters.storage.database import Database
from domain.errors import LedgerUnavailable

SIGNING_KEY_SETTING = "LESSON_LEDGER_CHECKPOINT_SIGNING_KEY"
KEY_NAME = "checkpoint_signing_key"


class CheckpointSigner:
    """Signs checkpoints and re-anchorings with the ledger's Ed25519 key."""

    def __init__(self, private_key: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private_key)
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def key_id(self) -> str:
        return key_id(self._public)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def key_id(public_key: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of the public key's raw bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_text(public_key: bytes) -> str:
    return base64.b64encode(public_key).decode()


def parse_public_key(text: str) -> bytes:
    """A public key as `audit public-key` prints it (base64 of 32 bytes); ValueError."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(key)}")
    return key


def open_signer(database: Database) -> CheckpointSigner:
    """The ledger's signing key; LedgerUnavailable (one line) when there is none."""
    text = os.environ.get(SIGNING_KEY_SETTING)
    if text:
        try:
            seed = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise LedgerUnavailable(f"{SIGNING_KEY_SETTING} is not base64") from None
        if len(seed) != 32:
            raise LedgerUnavailable(
                f"{SIGNING_KEY_SETTING} must be 32 bytes as base64, not {len(seed)}"
            )
        return CheckpointSigner(seed)
    try:
        keys = open_keys(
            key_file=os.environ.get(KEY_FILE_SETTING),
            database_kind=database.kind,
            database_path=database.path,
        )
    except (KeyFileError, KeyFileNotConfigured) as error:
        raise LedgerUnavailable(str(error)) from None
    if KEY_NAME not in keys.keys:
        raise LedgerUnavailable(
            f"no checkpoint signing key: set {SIGNING_KEY_SETTING}, or add one to the key "
            f"file with `lesson-ledger keys init {keys.path}`"
        )
    return CheckpointSigner(keys[KEY_NAME])
