"""What an auditor runs, without the ledger's database: a checkpoint's signature, and that
an event is in the signed tree (inclusion) or that a later tree extends an earlier one
(consistency), as RFC 9162 (2.1.3.2, 2.1.4.2) verifies them. Functions of the public key,
a checkpoint and a proof; nothing else (the standard library and `cryptography`).

    from projections.merkle.verify import EventProof, verify_event
    checkpoint = Checkpoint.from_json(answer["checkpoint"])      # history?proof=true
    proof = EventProof.from_json(answer["entries"][0]["proof"])
    verify_event(public_key, checkpoint, proof)  # raises InvalidCheckpoint / InvalidProof
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from projections.merkle.checkpoint import Checkpoint
from projections.merkle.tree import event_leaf, leaf_hash, node_hash


class InvalidCheckpoint(ValueError):
    """The checkpoint is not signed by the key the auditor trusts."""


class InvalidProof(ValueError):
    """The event, as the proof gives its bytes, is not in the checkpoint's tree."""


@dataclass(frozen=True)
class EventProof:
    """That one stored event is leaf `index` of a checkpoint's tree: its bytes as stored
    (lesson id, version, topic, state: what its leaf is made of) and the audit path."""

    index: int
    lesson_id: UUID
    version: int
    topic: str
    state: bytes
    path: list[bytes]

    def leaf(self) -> bytes:
        return leaf_hash(event_leaf(self.lesson_id.bytes, self.version, self.topic, self.state))

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "lesson_id": str(self.lesson_id),
            "version": self.version,
            "topic": self.topic,
            "state": base64.b64encode(self.state).decode(),
            "path": [node.hex() for node in self.path],
        }

    @classmethod
    def from_json(cls, data: Any) -> EventProof:
        """A proof from its JSON form; InvalidProof naming what is wrong."""
        try:
            return cls(
                index=int(data["index"]),
                lesson_id=UUID(str(data["lesson_id"])),
                version=int(data["version"]),
                topic=str(data["topic"]),
                state=base64.b64decode(data["state"], validate=True),
                path=[bytes.fromhex(node) for node in data["path"]],
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise InvalidProof(f"not a proof: {type(error).__name__}: {error}") from None


def verify_event(public_key: bytes, checkpoint: Checkpoint, proof: EventProof) -> None:
    """Raise unless the checkpoint is signed by this key (InvalidCheckpoint) and the
    event's bytes are leaf `proof.index` of its tree (InvalidProof)."""
    verify_checkpoint(public_key, checkpoint)
    if not verify_inclusion(proof.leaf(), proof.index, checkpoint, proof.path):
        raise InvalidProof(
            f"lesson {proof.lesson_id} version {proof.version}, as given, is not leaf "
            f"{proof.index} of the checkpoint's tree of {checkpoint.size}"
        )


def verify_checkpoint(public_key: bytes, checkpoint: Checkpoint) -> None:
    """Raise InvalidCheckpoint unless `checkpoint` is signed by this Ed25519 public key."""
    if not signed_by(public_key, checkpoint.signature, checkpoint.message()):
        raise InvalidCheckpoint(f"checkpoint of size {checkpoint.size} is not signed by this key")


def signed_by(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is this Ed25519 public key's over `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


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
