"""The hashes that keep the GIL (domain/digests.py) are the standard library's, byte for
byte, whatever the size: stored key names, keyed ids and fingerprints depend on it."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.digests import KeyedBlake2b, KeyedHash, sha256

data = st.binary(max_size=9000)
key = st.binary(min_size=32, max_size=64)


@given(data)
@example(b"x" * 2047)
@example(b"x" * 2048)
def test_sha256_is_hashlibs(value: bytes) -> None:
    assert sha256(value) == hashlib.sha256(value).digest()


@given(key, st.lists(data, max_size=3))
@example(b"k" * 32, [b"body\x00", b"x" * 4100])
def test_a_keyed_hash_of_pieces_is_the_hmac_of_them_joined(
    secret: bytes, pieces: list[bytes]
) -> None:
    expected = hmac.new(secret, b"".join(pieces), hashlib.sha256)
    keyed = KeyedHash(secret)
    assert keyed.digest(*pieces) == expected.digest()
    assert keyed.hexdigest(*pieces) == expected.hexdigest()


@given(key, data)
@example(b"k" * 32, b"x" * 2047)
@example(b"k" * 32, b"x" * 4100)
def test_a_keyed_blake2b_is_hashlibs_in_its_keyed_mode(secret: bytes, value: bytes) -> None:
    expected = hashlib.blake2b(value, key=secret, digest_size=32).hexdigest()
    assert KeyedBlake2b(secret).hexdigest(value) == expected


def test_a_keyed_blake2b_refuses_a_key_it_would_not_take_whole() -> None:
    with pytest.raises(ValueError, match="16 to 64 bytes, not 65"):
        KeyedBlake2b(b"k" * 65)
    with pytest.raises(ValueError, match="16 to 64 bytes, not 0"):
        KeyedBlake2b(b"")
