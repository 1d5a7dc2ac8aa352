"""The key-encryption keys that wrap the data keys (adapters/keys/data_keys.py): the
current one wraps and opens, the one before the last rotation still opens. The key file
is read again when a key opens with neither, and looked at (a stat) before keys are
wrapped, so that a rotation by another process is taken up."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.keys.nonces import NONCE_BYTES, NONCES
from domain.errors import LedgerUnavailable

KEY_BYTES = 32


class KeyEncryptionKeyError(LedgerUnavailable):
    """The key-encryption key does not open this database's data keys."""


class KeyFileKeys(Protocol):
    """The current and previous key-encryption keys where they are kept."""

    def read(self) -> tuple[bytes, bytes | None]: ...

    def changed(self) -> tuple[bytes, bytes | None] | None:
        """The keys, read again if they may have changed since the last read."""


class Wrapping:
    """Wraps data keys with the current key-encryption key; opens them with it, or else
    with the previous one."""

    def __init__(
        self, kek: bytes, previous: bytes | None = None, reread: KeyFileKeys | None = None
    ) -> None:
        """`reread`: the current and previous keys as the key file holds them now (after
        a rotation elsewhere)."""
        self._reread = reread
        self.use(kek, previous)

    def use(self, kek: bytes, previous: bytes | None) -> None:
        """Wrap with `kek` from now on; open with it, or else with `previous`."""
        if len(kek) != KEY_BYTES:
            raise KeyEncryptionKeyError(
                f"the key-encryption key must be {KEY_BYTES} bytes, not {len(kek)}"
            )
        kek_id = hashlib.sha256(kek).hexdigest()[:12]
        # One assignment: a thread wrapping meanwhile takes the key and its id together.
        self._wrapping = (AESGCM(kek), kek_id)
        self._openers = (self._wrapping[0], *([AESGCM(previous)] if previous else []))
        self.kek, self.kek_id, self.previous = kek, kek_id, previous

    def wrap(self, key_id: str, raw: bytes) -> tuple[str, str]:
        """The key wrapped, and the id of the key-encryption key that wrapped it."""
        kek, kek_id = self._wrapping
        nonce = NONCES.one()
        wrapped = base64.b64encode(nonce + kek.encrypt(nonce, raw, key_id.encode())).decode()
        return wrapped, kek_id

    def unwrap(self, key_id: str, wrapped: str) -> bytes:
        """The key, opened with the current key-encryption key or the one before; when
        neither opens it, the key file is read again once (rotated since this process
        started). KeyEncryptionKeyError, one line, if it still does not open."""
        data = base64.b64decode(wrapped)
        opened = _opened(self._openers, key_id, data)
        if opened is None and self._reread_file():
            opened = _opened(self._openers, key_id, data)
        if opened is not None:
            return opened
        raise KeyEncryptionKeyError(
            f"data key {key_id} does not open with the key-encryption key ({self.kek_id}) or "
            "the one before it: check LESSON_LEDGER_KEY_FILE or LESSON_LEDGER_KEY_ENCRYPTION_KEY"
        )

    def opens_with_current(self, key_id: str, wrapped: str) -> bool:
        """Whether the current key-encryption key alone opens this key."""
        return _opened(self._openers[:1], key_id, base64.b64decode(wrapped)) is not None

    def follow_rotation(self) -> None:
        """Before wrapping new keys: a rotation since the key file was last read is taken
        up. Wrapped with the key before, they would be lost at the next rotation but one
        (which drops that key from the file) if this process opened no key meanwhile."""
        if self._reread is not None and (found := self._reread.changed()) is not None:
            self._take(found)

    def _reread_file(self) -> bool:
        """Whether the key file, read again, holds another current key-encryption key
        (then used from now on)."""
        if self._reread is None:
            return False
        return self._take(self._reread.read())

    def _take(self, found: tuple[bytes, bytes | None]) -> bool:
        """Whether these keys hold another current key-encryption key (then used)."""
        kek, previous = found
        if kek == self.kek:
            return False
        self.use(kek, previous)
        return True


def _opened(openers: Sequence[AESGCM], key_id: str, data: bytes) -> bytes | None:
    """A wrapped key opened with the first of these key-encryption keys that opens it."""
    for opener in openers:
        try:
            return opener.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            continue
    return None
