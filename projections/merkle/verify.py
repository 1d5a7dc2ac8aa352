"""What an auditor runs, without the ledger's database: a checkpoint's signature, and that
an event is in the signed tree (inclusion) or that a later tree extends an earlier one
(consistency), as RFC 9162 (2.1.3.2, 2.1.4.2) verifies them. Functions of the public key,
a checkpoint and a proof; nothing else.

    from projections.merkle.verify import verify_checkpoint, verify_inclusion
    verify_checkpoint(public_key, checkpoint)              # raises InvalidCheckpoint
    verify_inclusion(leaf_hash(event_leaf(...)), index, checkpoint, proof)  # True/False
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from projections.merkle.checkpoint import Checkpoint
from projections.merkle.tree import node_hash


class InvalidCheckpoint(ValueError):
    """The checkpoint is not signed by the key the auditor trusts."""


def verify_checkpoint(public_key: bytes, checkpoint: Checkpoint) -> None:
    """Raise InvalidCheckpoint unless `checkpoint` is signed by this Ed25519 public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            checkpoint.signature, checkpoint.message()
        )
    except (InvalidSignature, ValueError):
        raise InvalidCheckpoint(
            f"checkpoint of size {checkpoint.size} is not signed by this key"
        ) from None


def verify_inclusion(leaf: bytes, index: int, checkpoint: Checkpoint, proof: list[bytes]) -> bool:
    """Whether the leaf hash is leaf `index` of the checkpoint's tree."""
    return inclusion_root(leaf, index, checkpoint.size, proof) == checkpoint.root


def inclusion_root(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (None when it cannot be a proof at all)."""
    if not 0 <= index < size:
        return None
    fn, sn, current = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            current = node_hash(current, sibling)
        fn, sn = fn >> 1, sn >> 1
    return current if sn == 0 else None


def verify_consistency(
    old_size: int, old_root: bytes, new_size: int, new_root: bytes, proof: list[bytes]
) -> bool:
    """Whether the tree of `new_size` (root `new_root`) extends that of `old_size`."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first, second = node_hash(sibling, first), node_hash(sibling, second)
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first == old_root and second == new_root
