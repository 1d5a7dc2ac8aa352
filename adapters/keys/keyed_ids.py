"""Ids derived from what clients send as idempotency keys, by a keyed hash.

A client's key is opaque and may hold personal data (the calendar's single-lesson key
holds student ids), so it is never stored: the ledger keeps `k-` and the base32 of the
first 20 bytes of HMAC-SHA256(hash key, client key) instead, an id of the ledger's own
request-id alphabet. Without the hash key (kept outside the database, in the key file)
nobody can test a guess of the key against the stored id.
"""

from __future__ import annotations

import base64

from domain.digests import KeyedHash

PREFIX = "k-"
DIGEST_BYTES = 20


class KeyedIds:
    """Derives ids from client keys with the ledger's hash key."""

    def __init__(self, hash_key: bytes) -> None:
        if len(hash_key) < 32:
            raise ValueError("the hash key must be at least 32 bytes")
        self._hash = KeyedHash(hash_key)

    def derive(self, client_key: str) -> str:
        """`k-` and 32 base32 characters (lower case): the same key, the same id."""
        digest = self._hash.digest(client_key.encode())
        return PREFIX + base64.b32encode(digest[:DIGEST_BYTES]).decode().lower()

    def fingerprint(self, body: bytes) -> str:
        """A keyed hash of a request's body (it holds students' data), hex: a copy of the
        database cannot confirm a guessed body. Apart from `derive` (a key has no NUL)."""
        return self._hash.hexdigest(b"body\x00", body)
