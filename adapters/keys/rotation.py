"""Rotating the key-encryption key: every data key rewrapped with a new one, in one
transaction, no event touched.

The new key goes into the key file first, with the old one kept as
`previous_key_encryption_key`; then the data keys are rewrapped. The old key stays in the
file until the next rotation: a process that has not read the file since (a server still
running) wraps the keys it makes with it until it meets a key it cannot open, and then
reads the file again (adapters/keys/data_keys.py); every process opens with both. A
rotation interrupted before its rewrap is finished by the next start (the data keys
still open only with the previous key: they are rewrapped with the current).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.data_keys import DataKeys
from adapters.keys.keyfile import read_keys, replace_keys

PREVIOUS = "previous_key_encryption_key"
CURRENT = "key_encryption_key"


def rotate(data_keys: DataKeys, key_file: Path, current: bytes) -> int:
    """A new key-encryption key for the data keys and the key file; how many keys. Keys
    under the key before the current one (made since the last rotation by a process that
    had not heard of it) are rewrapped too: that key leaves the file."""
    new = AESGCM.generate_key(bit_length=256)
    replace_keys(key_file, {CURRENT: new, PREVIOUS: current})
    return data_keys.rewrap(new)


def in_file(key_file: Path) -> Callable[[], tuple[bytes, bytes | None]]:
    """The current and previous key-encryption keys as the key file holds them, when
    asked (after a rotation by another process)."""

    def read() -> tuple[bytes, bytes | None]:
        keys = read_keys(key_file).keys
        return keys[CURRENT], keys.get(PREVIOUS)

    return read


def opened(
    open_with: Callable[[bytes, bytes | None], DataKeys],
    current: bytes,
    previous: bytes | None,
) -> DataKeys:
    """The data keys, opened with the current key-encryption key (and the previous); if
    they open only with the previous one (a rotation interrupted before its rewrap),
    rewrapped with the current first."""
    keys = open_with(current, previous)
    if previous is not None and keys.opens_only_with_previous():
        keys.rewrap(current)
    return keys
