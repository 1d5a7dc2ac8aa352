"""Rotating the key-encryption key: every data key rewrapped with a new one, in one
transaction, no event touched.

The new key goes into the key file first, with the old one kept as
`previous_key_encryption_key`; then the data keys are rewrapped; then the old key leaves
the file. A rotation interrupted between those steps is finished by the next start (the
data keys still open only with the previous key: they are rewrapped with the current).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.data_keys import DataKeys, KeyEncryptionKeyError
from adapters.keys.keyfile import replace_keys

PREVIOUS = "previous_key_encryption_key"
CURRENT = "key_encryption_key"


def rotate(data_keys: DataKeys, key_file: Path, current: bytes) -> int:
    """A new key-encryption key for the data keys and the key file; how many keys."""
    new = AESGCM.generate_key(bit_length=256)
    replace_keys(key_file, {CURRENT: new, PREVIOUS: current})
    count = data_keys.rewrap(new)
    replace_keys(key_file, {PREVIOUS: None})
    return count


def opened(
    open_with: Callable[[bytes], DataKeys],
    current: bytes,
    previous: bytes | None,
    key_file: Path | None,
) -> DataKeys:
    """The data keys, opened with the current key-encryption key; if they still open only
    with the previous one (an interrupted rotation), rewrapped with the current first."""
    try:
        return open_with(current)
    except KeyEncryptionKeyError:
        if previous is None:
            raise
    open_with(previous).rewrap(current)
    if key_file is not None:
        replace_keys(key_file, {PREVIOUS: None})
    return open_with(current)
