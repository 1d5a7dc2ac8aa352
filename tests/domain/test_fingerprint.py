"""The idempotency fingerprint's recipes stay what they were, whatever a command's size:
a retry of a request recorded by an earlier release must still be a replay."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

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
    parts: list[Any] = ["request", "alice", {"subject": "Reading", "note": note}, None]
    expected = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert Fingerprint.of(*parts).text == "2:" + expected


@given(notes)
@example("é" * 3000)
def test_the_first_recipe_is_the_sha256_of_json_dumps_sorted(note: str) -> None:
    parts: list[Any] = ["request", "alice", {"note": note, "subject": "Reading"}, None]
    expected = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    printed = Fingerprint.of(*parts)
    assert printed.first_recipe == expected
    assert printed.matches(expected)


KEY = bytes(range(32))


@given(notes)
@example("x" * 2020)
@example("x" * 4100)
def test_the_keyed_recipe_is_the_keyed_blake2b_of_the_sorted_compact_json(note: str) -> None:
    parts: list[Any] = ["request", "alice", {"subject": "Reading", "note": note}, None]
    data = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    expected = hashlib.blake2b(data, key=KEY, digest_size=32).hexdigest()
    printed = Fingerprint.of(*parts, key=KEY)
    assert printed.text == "4:" + expected
    assert printed.matches("4:" + expected)


@given(notes)
@example("x" * 4100)
def test_a_print_of_the_first_keyed_release_still_matches(note: str) -> None:
    """`3:`: HMAC-SHA256 under the print key of the SHA-256 of the sorted compact JSON,
    as events written from the first keyed release until the BLAKE2b recipe hold it."""
    parts: list[Any] = ["request", "alice", {"subject": "Reading", "note": note}, None]
    digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()
    stored = "3:" + hmac.new(KEY, digest, hashlib.sha256).hexdigest()
    assert Fingerprint.of(*parts, key=KEY).matches(stored)
    assert not Fingerprint.of(*parts, key=bytes(32)).matches(stored)
    assert not Fingerprint.of(*parts[:2], {"subject": "Math"}, None, key=KEY).matches(stored)


def test_a_keyed_print_confirms_no_guess_without_the_key() -> None:
    """Whoever holds the events but not the key cannot test a guess of what a command
    carried: neither an unkeyed digest nor another key's print equals it."""
    parts: list[Any] = ["request", "alice", {"iep_goals": ["decode CVC words"]}, None]
    keyed = Fingerprint.of(*parts, key=KEY).text
    assert keyed.startswith("4:")
    unkeyed = Fingerprint.of(*parts).text
    assert keyed[2:] != unkeyed[2:]
    assert keyed != Fingerprint.of(*parts, key=bytes(32)).text
    assert not Fingerprint.of(*parts).matches(keyed)
