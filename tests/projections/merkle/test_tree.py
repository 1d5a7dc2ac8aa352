"""The Merkle tree held to the test vectors of the Certificate Transparency reference
implementation (RFC 6962): roots of the trees of 0 to 8 leaves, inclusion and consistency
proofs; and every leaf and every pair of sizes of larger trees round-trips through the
auditor's verification, which refuses altered leaves, roots and proofs."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.merkle.checkpoint import Checkpoint, message
from projections.merkle.tree import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    needed,
    node_hash,
    root,
)
from projections.merkle.verify import (
    InvalidCheckpoint,
    inclusion_root,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)

LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
INCLUSION = [  # (leaf index, tree size, proof)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


class InMemory:
    """Perfect subtrees computed from a list of leaf hashes (what a store keeps)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves

    def perfect(self, level: int, index: int) -> bytes:
        hashes = self.leaves[index << level : (index + 1) << level]
        while len(hashes) > 1:
            hashes = [node_hash(a, b) for a, b in zip(hashes[::2], hashes[1::2], strict=True)]
        return hashes[0]


LEAVES = [leaf_hash(data) for data in LEAF_INPUTS]


def test_roots_match_the_reference_for_0_to_8_leaves() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    frontier = Frontier()
    for size in range(1, 9):
        assert root(InMemory(LEAVES), size) == ROOTS[size]
        frontier.append(LEAVES[size - 1])
        assert frontier.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_reference(index: int, size: int, proof: list[str]) -> None:
    made = inclusion_proof(InMemory(LEAVES), index, size)
    assert [p.hex() for p in made] == proof
    assert inclusion_root(LEAVES[index], index, size, made) == ROOTS[size]


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference(old: int, new: int, proof: list[str]) -> None:
    made = consistency_proof(InMemory(LEAVES), old, new)
    assert [p.hex() for p in made] == proof
    assert verify_consistency(old, ROOTS[old], new, ROOTS[new], made)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.randoms(use_true_random=False))
def test_every_proof_of_a_larger_tree_verifies_and_alterations_do_not(
    size: int, rng: random.Random
) -> None:
    leaves = [leaf_hash(rng.randbytes(rng.randint(0, 12))) for _ in range(size)]
    nodes = InMemory(leaves)
    head = root(nodes, size)
    for index in range(size):
        proof = inclusion_proof(nodes, index, size)
        assert inclusion_root(leaves[index], index, size, proof) == head
        assert inclusion_root(leaf_hash(b"altered"), index, size, proof) != head
    old = rng.randint(1, size)
    proof = consistency_proof(nodes, old, size)
    assert verify_consistency(old, root(nodes, old), size, head, proof)
    if old < size:
        assert not verify_consistency(old, leaf_hash(b"x"), size, head, proof)
        assert not verify_consistency(old, root(nodes, old), size, leaf_hash(b"x"), proof)


def test_what_a_proof_needs_is_known_before_it_is_computed() -> None:
    wanted = needed(lambda nodes: inclusion_proof(nodes, 5, 8))
    assert wanted == {(0, 4), (1, 3), (2, 0)}


def sign(key: Ed25519PrivateKey, size: int, head: bytes) -> Checkpoint:
    time = datetime(2025, 9, 5, 8, tzinfo=UTC)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Checkpoint(size, head, time, public.hex()[:16], key.sign(message(size, head, time)))


def test_the_auditors_check_of_a_checkpoint_and_an_inclusion_proof() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    checkpoint = sign(key, 8, ROOTS[8])
    proof = inclusion_proof(InMemory(LEAVES), 5, 8)

    verify_checkpoint(public, checkpoint)
    assert verify_inclusion(LEAVES[5], 5, checkpoint, proof)
    assert not verify_inclusion(leaf_hash(b"\x50\x51altered"), 5, checkpoint, proof)
    forged = Checkpoint(8, ROOTS[7], checkpoint.time, checkpoint.key_id, checkpoint.signature)
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(public, forged)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(public, sign(other, 8, ROOTS[8]))
    assert Checkpoint.from_json(checkpoint.as_json()) == checkpoint
