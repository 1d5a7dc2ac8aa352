"""Rotating the key-encryption key: every data key rewrapped with a new one, in one
transaction, no event touched.

The new key goes into the key file first, with the old one kept as
`previous_key_encryption_key`; then the data keys are rewrapped. The old key stays in the
file until the next rotation: a process that has not read the file since (a server still
running) reads it again before it wraps a key it makes (the file replaced since its last
look) or when it meets a key it cannot open (adapters/keys/data_keys.py); every process
opens with both. A
rotation interrupted before its rewrap is finished by the next start (the data keys
still open only with the previous key: they are rewrapped with the current).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.data_keys import DataKeys
from adapters.keys.keyfile import KeyFileError, read_keys, replace_keys

log = logging.getLogger("lesson_ledger.keys")

PREVIOUS = "previous_key_encryption_key"
CURRENT = "key_encryption_key"


def rotate(data_keys: DataKeys, key_file: Path, current: bytes) -> int:
    """A new key-encryption key for the data keys and the key file; how many keys. Keys
    under the key before the current one (made since the last rotation by a process that
    had not heard of it) are rewrapped too: that key leaves the file."""
    new = AESGCM.generate_key(bit_length=256)
    replace_keys(key_file, {CURRENT: new, PREVIOUS: current})
    return data_keys.rewrap(new)


class KeyFileWatch:
    """The current and previous key-encryption keys as the key file holds them: read
    when asked (a key met that the keys in memory do not open), or when the file has
    been replaced since the last look (a rotation by another process)."""

    def __init__(self, key_file: Path) -> None:
        self.path = key_file
        self._seen: tuple[int, int, int] | None = None
        """The file's inode, size and time when last read; None: not read yet."""

    def read(self) -> tuple[bytes, bytes | None]:
        with suppress(OSError):  # looked at first: a change after it is seen next time
            self._seen = self._look()
        keys = read_keys(self.path).keys
        return keys[CURRENT], keys.get(PREVIOUS)

    def changed(self) -> tuple[bytes, bytes | None] | None:
        """The keys, if the file may hold others than when last read (a stat, no read,
        when it does not). A file that cannot be read (removed, or edited by hand) leaves
        the keys in memory in use, and is said once in the log."""
        try:
            look = self._look()
        except OSError:
            return None
        if look == self._seen:
            return None
        try:
            return self.read()
        except KeyFileError as error:
            self._seen = look
            log.warning(
                "the key file changed but cannot be read; the keys in memory go on: %s", error
            )
            return None

    def _look(self) -> tuple[int, int, int]:
        # A rotation renames a new file over the old: another inode, whatever the clock.
        found = self.path.stat()
        return found.st_ino, found.st_size, found.st_mtime_ns


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
