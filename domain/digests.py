"""SHA-256, HMAC-SHA256 and keyed BLAKE2b that keep the GIL.

Given 2,048 bytes or more in one call, hashlib lets go of the GIL (as `hmac.digest`
always does), and a server's other threads then keep it for their switch interval: a
microsecond's hash costs the request milliseconds
(docs/decisions/0053-hashing-without-letting-go-of-the-gil.md). These feed less at a time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

HELD_BYTES = 2047
"""The most bytes one hashlib call takes without letting go of the GIL (CPython's
HASHLIB_GIL_MINSIZE is 2048)."""


class _Fed(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def sha256(data: bytes) -> bytes:
    """The SHA-256 of `data`."""
    digest = hashlib.sha256()
    _feed(digest, data)
    return digest.digest()


class KeyedHash:
    """HMAC-SHA256 under one key, set up once: each digest is made from a copy."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, *pieces: bytes) -> bytes:
        """The HMAC of the pieces, one after another."""
        mac = self._keyed.copy()
        for data in pieces:
            _feed(mac, data)
        return mac.digest()

    def hexdigest(self, *pieces: bytes) -> str:
        return self.digest(*pieces).hex()


class KeyedBlake2b:
    """BLAKE2b-256 in its keyed mode (a MAC, RFC 7693) under one key, set up once: each
    digest is made from a copy. One pass over the data, where HMAC-SHA256 of a SHA-256
    is two and a copy of two hash states."""

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= hashlib.blake2b.MAX_KEY_SIZE:
            raise ValueError(f"a BLAKE2b key is 16 to 64 bytes, not {len(key)}")
        self._keyed = hashlib.blake2b(key=key, digest_size=32)

    def hexdigest(self, data: bytes) -> str:
        mac = self._keyed.copy()
        _feed(mac, data)
        return mac.hexdigest()


def _feed(hashed: _Fed, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), HELD_BYTES):
        hashed.update(view[start : start + HELD_BYTES])
