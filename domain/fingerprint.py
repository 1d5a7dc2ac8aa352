"""The fingerprint of a command: what a retry under the same request id must repeat (the
command, who sent it, and what it carried), as a digest stored in the command's event.

A command carries students' details, so a plain digest of it would let anyone holding
the events confirm a guess of them, erased or not: the current recipe is keyed, `4:` and
BLAKE2b-256 in its keyed mode, under a key kept outside the database, of the parts as
sorted, compact JSON (orjson) (docs/decisions/0056-a-keyed-blake2b-fingerprint.md).
Earlier recipes still match, so a retry is a replay across releases: `3:`, an
HMAC-SHA256 under the same key of the SHA-256 of that JSON (the first keyed release);
`2:` and that SHA-256 unkeyed (release 0.1.0); the first release's plain SHA-256 of
`json.dumps(..., sort_keys=True)`; and `1k:`, the first recipe keyed (how the
student-data migration rewrites it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import orjson

from domain.cached import cached_attribute
from domain.digests import KeyedBlake2b, KeyedHash, sha256


@dataclass(frozen=True)
class Fingerprint:
    """What a retry under the same request id must repeat: the command, who sent it,
    and what it carried, as a digest stored in the command's event."""

    parts: tuple[object, ...]
    key: bytes | None = None
    """The print key; without one (None, empty), the unkeyed `2:` recipe of release 0.1.0."""

    @classmethod
    def of(
        cls, command: str, actor: str, *payload: object, key: bytes | None = None
    ) -> Fingerprint:
        return cls((command, actor, *payload), key)

    @cached_attribute
    def text(self) -> str:
        """The current recipe: `4:` keyed (`2:` without a key)."""
        if not self.key:
            digest = self._digest()
            return self.first_recipe if digest is None else "2:" + digest.hex()
        data = self._json()
        if data is None:  # an integer beyond 64 bits, say: the first recipe, keyed
            return "1k:" + _keyed(self.key, bytes.fromhex(self.first_recipe))
        return "4:" + _blake2b_under(self.key).hexdigest(data)

    @property
    def hmac_recipe(self) -> str | None:
        """The keyed print as the first keyed release made it (`3:`); None without a key
        or where orjson cannot encode the parts."""
        digest = self._digest()
        if not self.key or digest is None:
            return None
        return "3:" + _keyed(self.key, digest)

    def _digest(self) -> bytes | None:
        """The SHA-256 of the parts as sorted, compact JSON (orjson)."""
        data = self._json()
        return None if data is None else sha256(data)

    def _json(self) -> bytes | None:
        """The parts as sorted, compact JSON (orjson); None where it cannot encode them."""
        try:
            return orjson.dumps(list(self.parts), default=str, option=_PRINT_OPTIONS)
        except orjson.JSONEncodeError:
            return None

    @property
    def first_recipe(self) -> str:
        """The digest as the first release made it (its events still hold it)."""
        text = _FIRST_RECIPE_JSON.encode(list(self.parts))
        return sha256(text.encode()).hex()

    def matches(self, stored: str) -> bool:
        """True when `stored` is this print, by whichever recipe made it."""
        if stored.startswith("4:"):
            return stored == self.text
        if stored.startswith("3:"):
            return stored == self.hmac_recipe
        if stored.startswith("2:"):
            digest = self._digest()
            return digest is not None and stored == "2:" + digest.hex()
        if stored.startswith("1k:"):
            first = bytes.fromhex(self.first_recipe)
            return bool(self.key) and stored == "1k:" + _keyed(self.key or b"", first)
        return stored == self.first_recipe


def rekeyed(stored: str, key: bytes) -> str:
    """A stored print of an unkeyed recipe under `key` (what the student-data migration
    writes): `3:` or `1k:`, made from the digest alone, as the command itself is not at
    hand. It keeps matching the same retries."""
    if stored.startswith("2:"):
        return "3:" + _keyed(key, bytes.fromhex(stored[2:]))
    if stored.startswith(("4:", "3:", "1k:")):
        return stored
    return "1k:" + _keyed(key, bytes.fromhex(stored))


def _keyed(key: bytes, digest: bytes) -> str:
    return _hmac_under(key).hexdigest(digest)


# One keyed hash per key and recipe: the key's set-up is paid once, not per command (a
# process holds one or two keys).
@lru_cache(maxsize=8)
def _hmac_under(key: bytes) -> KeyedHash:
    return KeyedHash(key)


@lru_cache(maxsize=8)
def _blake2b_under(key: bytes) -> KeyedBlake2b:
    return KeyedBlake2b(key)


_PRINT_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
# Exactly json.dumps(..., sort_keys=True, default=str), the first recipe, with one
# encoder kept rather than made per call, and no check for circular references
# (commands are trees).
_FIRST_RECIPE_JSON = json.JSONEncoder(sort_keys=True, default=str, check_circular=False)
