"""The fingerprint of a command: what a retry under the same request id must repeat (the
command, who sent it, and what it carried), as a digest stored in the command's event.

A command carries students' details, so a plain digest of it would let anyone holding
the events confirm a guess of them, erased or not: the current recipe is keyed, `3:` and
an HMAC-SHA256, under a key kept outside the database, of the SHA-256 of the parts as
sorted, compact JSON (orjson). Earlier recipes still match, so a retry is a replay across
releases: `2:` and that SHA-256 unkeyed (release 0.1.0), the first release's plain
SHA-256 of `json.dumps(..., sort_keys=True)`, and `1k:`, the first recipe keyed (how the
student-data migration rewrites it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from domain.cached import cached_attribute
from domain.digests import KeyedHash, sha256


@dataclass(frozen=True)
class Fingerprint:
    """What a retry under the same request id must repeat: the command, who sent it,
    and what it carried, as a digest stored in the command's event."""

    parts: tuple[object, ...]
    key: bytes | None = None
    """The HMAC key; without one (None, empty), the unkeyed `2:` recipe of release 0.1.0."""

    @classmethod
    def of(
        cls, command: str, actor: str, *payload: object, key: bytes | None = None
    ) -> Fingerprint:
        return cls((command, actor, *payload), key)

    @cached_attribute
    def text(self) -> str:
        """The current recipe: `3:` keyed (`2:` without a key)."""
        digest = self._digest()
        if not self.key:
            return self.first_recipe if digest is None else "2:" + digest.hex()
        if digest is None:  # an integer beyond 64 bits, say: the first recipe, keyed
            return "1k:" + _keyed(self.key, bytes.fromhex(self.first_recipe))
        return "3:" + _keyed(self.key, digest)

    def _digest(self) -> bytes | None:
        """The SHA-256 of the parts as sorted, compact JSON (orjson)."""
        try:
            data = orjson.dumps(list(self.parts), default=str, option=_PRINT_OPTIONS)
        except orjson.JSONEncodeError:
            return None
        return sha256(data)

    @property
    def first_recipe(self) -> str:
        """The digest as the first release made it (its events still hold it)."""
        text = _FIRST_RECIPE_JSON.encode(list(self.parts))
        return sha256(text.encode()).hex()

    def matches(self, stored: str) -> bool:
        """True when `stored` is this print, by whichever recipe made it."""
        if stored.startswith("3:"):
            return stored == self.text
        if stored.startswith("2:"):
            digest = self._digest()
            return digest is not None and stored == "2:" + digest.hex()
        if stored.startswith("1k:"):
            first = bytes.fromhex(self.first_recipe)
            return bool(self.key) and stored == "1k:" + _keyed(self.key or b"", first)
        return stored == self.first_recipe


def rekeyed(stored: str, key: bytes) -> str:
    """A stored print of an unkeyed recipe under `key`, as the current one would make it
    (what the student-data migration writes): it keeps matching the same retries."""
    if stored.startswith("2:"):
        return "3:" + _keyed(key, bytes.fromhex(stored[2:]))
    if stored.startswith(("3:", "1k:")):
        return stored
    return "1k:" + _keyed(key, bytes.fromhex(stored))


def _keyed(key: bytes, digest: bytes) -> str:
    # One keyed hash per key: the key's set-up is paid once, not per command.
    keyed = _KEYED.get(key)
    if keyed is None:
        keyed = _KEYED[key] = KeyedHash(key)
    return keyed.hexdigest(digest)


_KEYED: dict[bytes, KeyedHash] = {}
"""A keyed hash per key (a process holds one or two keys)."""


_PRINT_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
# Exactly json.dumps(..., sort_keys=True, default=str), the first recipe, with one
# encoder kept rather than made per call, and no check for circular references
# (commands are trees).
_FIRST_RECIPE_JSON = json.JSONEncoder(sort_keys=True, default=str, check_circular=False)
