"""The fingerprint of a command: what a retry under the same request id must repeat (the
command, who sent it, and what it carried), as a digest stored in the command's event.

Two recipes exist: the first release's (SHA-256 of `json.dumps(..., sort_keys=True)`)
and the current one (`2:` and the SHA-256 of sorted, compact JSON by orjson). Stored
fingerprints of either recipe keep matching, so a retry is a replay across releases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

import orjson


@dataclass(frozen=True)
class Fingerprint:
    """What a retry under the same request id must repeat: the command, who sent it,
    and what it carried, as a digest stored in the command's event."""

    parts: tuple[object, ...]

    @classmethod
    def of(cls, command: str, actor: str, *payload: object) -> Fingerprint:
        return cls((command, actor, *payload))

    @cached_property
    def text(self) -> str:
        """`2:` and the SHA-256 of the parts as sorted, compact JSON (orjson)."""
        try:
            data = orjson.dumps(list(self.parts), default=str, option=_PRINT_OPTIONS)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, say: the first recipe
            return self.first_recipe
        return _PRINT_REVISION + hashlib.sha256(data).hexdigest()

    @property
    def first_recipe(self) -> str:
        """The digest as the first release made it (its events still hold it)."""
        text = _FIRST_RECIPE_JSON.encode(list(self.parts))
        return hashlib.sha256(text.encode()).hexdigest()

    def matches(self, stored: str) -> bool:
        """True when `stored` is this print, by whichever recipe made it."""
        if stored.startswith(_PRINT_REVISION):
            return stored == self.text
        return stored == self.first_recipe


_PRINT_REVISION = "2:"
_PRINT_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
# Exactly json.dumps(..., sort_keys=True, default=str), the first recipe, with one
# encoder kept rather than made per call, and no check for circular references
# (commands are trees).
_FIRST_RECIPE_JSON = json.JSONEncoder(sort_keys=True, default=str, check_circular=False)
