"""Opening the ledger's keys for a database: its key file (or settings), then its data
keys, checked against the key-encryption key before anything else starts."""

from __future__ import annotations

import base64
import binascii
import os

from adapters.keys.data_keys import DataKeys
from adapters.keys.destructions import KeyErasurePoller
from adapters.keys.keyfile import KEY_FILE_SETTING, KeyFileError, KeyFileNotConfigured, open_keys
from adapters.keys.rotation import PREVIOUS, KeyFileWatch, opened
from adapters.keys.sealing import Sealer
from adapters.postgres.key_erasures import KeyErasureListener
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from domain.errors import LedgerUnavailable

KEK_SETTING = "LESSON_LEDGER_KEY_ENCRYPTION_KEY"
"""The key-encryption key as base64, instead of the key file's (e.g. from a secrets manager)."""


def open_sealer(database: Database) -> Sealer:
    """The sealing of students' details for this database; LedgerUnavailable, one line,
    when its keys cannot be read or the key-encryption key does not open its data keys."""
    try:
        keys = open_keys(
            key_file=os.environ.get(KEY_FILE_SETTING),
            database_kind=database.kind,
            database_path=database.path,
        )
    except (KeyFileError, KeyFileNotConfigured) as error:
        raise LedgerUnavailable(str(error)) from None
    setting = _setting_key()
    kek = setting or keys["key_encryption_key"]
    previous = None if setting else keys.keys.get(PREVIOUS)
    # A rotation by another process is read from the key file (a setting's key is rotated
    # where it is kept, and the processes restarted).
    reread = KeyFileWatch(keys.path) if keys.path is not None and setting is None else None
    sql = SqlStore(database, pool_size=2)
    try:
        data_keys = opened(
            lambda key, before: DataKeys(sql, key, previous=before, reread=reread),
            kek,
            previous,
        )
    except BaseException:
        sql.close()
        raise
    # Erasures elsewhere are heard of (LISTEN on a session of its own, or else polled
    # through the pool): keys are kept until then.
    session = database.session
    listener: KeyErasureListener | KeyErasurePoller
    if session is not None:
        listener = KeyErasureListener(session, data_keys)
    else:
        listener = KeyErasurePoller(data_keys)
    listener.start()
    return Sealer(
        data_keys,
        print_key=keys["print_key"],
        student_key=keys["student_key"],
        listener=listener,
    )


def _setting_key() -> bytes | None:
    text = os.environ.get(KEK_SETTING)
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise LedgerUnavailable(f"{KEK_SETTING} is not base64") from None
    if len(key) != 32:
        raise LedgerUnavailable(f"{KEK_SETTING} must be 32 bytes as base64, not {len(key)}")
    return key
