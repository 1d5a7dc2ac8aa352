"""The idempotency fingerprint's recipes stay what they were, whatever a command's size:
a retry of a request recorded by an earlier release must still be a replay."""

from __future__ import annotations

import hashlib
import json

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from domain.fingerprint import Fingerprint

# Sizes around 2 KiB, where the digest is fed in pieces (domain/digests.py).
notes = st.text(min_size=0, max_size=9000)


@given(notes)
@example("x" * 2020)
@example("x" * 4100)
def test_the_unkeyed_recipe_is_the_sha256_of_the_sorted_compact_json(note: str) -> None:
    parts = ["request", "alice", {"subject": "Reading", "note": note}, None]
    expected = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert Fingerprint.of(*parts).text == "2:" + expected


@given(notes)
@example("é" * 3000)
def test_the_first_recipe_is_the_sha256_of_json_dumps_sorted(note: str) -> None:
    parts = ["request", "alice", {"note": note, "subject": "Reading"}, None]
    expected = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    printed = Fingerprint.of(*parts)
    assert printed.first_recipe == expected
    assert printed.matches(expected)
