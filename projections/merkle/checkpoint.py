"""The ledger's signed records: a checkpoint (the tree's size and root at a time) and a
re-anchoring (projections/merkle/reanchor.py), signed (Ed25519) by the ledger.

What is signed is the text `lesson-ledger checkpoint\\n<size>\\n<root hex>\\n<time>\\n`,
followed, since erasure records are covered (projections/merkle/erasures.py), by
`erasures\\n<count>\\n<digest hex>\\n`; the JSON form (`as_json`, `from_json`) is what
`lesson-ledger audit checkpoint` writes and `GET /v1/audit/checkpoint` answers: it holds
no secret.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from projections.merkle.erasures import ErasureCoverage


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head."""

    size: int
    root: bytes
    time: datetime
    key_id: str
    """The first 16 hex digits of the SHA-256 of the signing key's public bytes."""
    signature: bytes
    erasures: ErasureCoverage | None = None
    """The erasure records it covers (None: signed before they were covered)."""

    def message(self) -> bytes:
        return message(self.size, self.root, self.time, self.erasures)

    def as_json(self) -> dict[str, Any]:
        made = {
            "size": self.size,
            "root": self.root.hex(),
            "time": self.time.isoformat(),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }
        if self.erasures is not None:
            made["erasures"] = self.erasures.as_json()
        return made

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        """A checkpoint from its JSON form; ValueError naming what is wrong."""
        try:
            return cls(
                size=int(data["size"]),
                root=bytes.fromhex(data["root"]),
                time=datetime.fromisoformat(data["time"]),
                key_id=str(data["key_id"]),
                signature=base64.b64decode(data["signature"], validate=True),
                erasures=None
                if data.get("erasures") is None
                else ErasureCoverage.from_json(data["erasures"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a checkpoint: {error}") from None


_CHANGE = struct.Struct(">q32s32s")


@dataclass(frozen=True)
class Change:
    """One leaf the migration changed."""

    index: int
    old: bytes
    new: bytes


@dataclass(frozen=True)
class Reanchoring:
    """A signed record of the tree taking rewritten events' new bytes."""

    size: int
    old_root: bytes
    new_root: bytes
    time: datetime
    reason: str
    changes: tuple[Change, ...]
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return reanchoring_message(
            self.size, self.old_root, self.new_root, self.time, self.reason, self.changes
        )

    def packed_changes(self) -> bytes:
        return pack(self.changes)

    def as_json(self) -> dict[str, Any]:
        """As `audit verify` shows it (the changed leaves counted, not listed)."""
        return {
            "size": self.size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "time": self.time.isoformat(),
            "reason": self.reason,
            "changed_events": len(self.changes),
            "key_id": self.key_id,
        }


def pack(changes: Iterable[Change]) -> bytes:
    return b"".join(_CHANGE.pack(c.index, c.old, c.new) for c in changes)


def unpack(packed: bytes) -> tuple[Change, ...]:
    return tuple(Change(*fields) for fields in _CHANGE.iter_unpack(packed))


def reanchoring_message(
    size: int,
    old_root: bytes,
    new_root: bytes,
    time: datetime,
    reason: str,
    changes: Sequence[Change],
) -> bytes:
    """What is signed: the roots, the time, the reason and a digest of every change."""
    digest = hashlib.sha256(pack(changes)).hexdigest()
    return (
        f"lesson-ledger re-anchoring\n{size}\n{old_root.hex()}\n{new_root.hex()}\n"
        f"{time.isoformat()}\n{reason}\n{digest}\n"
    ).encode()


class Signer(Protocol):
    """The ledger's checkpoint key (adapters/audit/signing.py): it signs, and says which
    public key checks what it signed."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def erasures_covered(checkpoint: Checkpoint | None) -> int:
    """How many erasure records (the first, in order) a checkpoint covers: 0 without one,
    or for one signed before they were covered."""
    if checkpoint is None or checkpoint.erasures is None:
        return 0
    return checkpoint.erasures.count


def signed(
    signer: Signer,
    size: int,
    root: bytes,
    time: datetime,
    erasures: ErasureCoverage | None = None,
) -> Checkpoint:
    """A checkpoint of the tree of `size` leaves with this root (and these erasure
    records), signed now."""
    signature = signer.sign(message(size, root, time, erasures))
    return Checkpoint(size, root, time, signer.key_id, signature, erasures)


def message(
    size: int, root: bytes, time: datetime, erasures: ErasureCoverage | None = None
) -> bytes:
    """What the ledger signs for a tree of `size` leaves and this root, at `time` (and
    the erasure records covered, for checkpoints that cover them)."""
    text = f"lesson-ledger checkpoint\n{size}\n{root.hex()}\n{time.isoformat()}\n"
    if erasures is not None:
        text += f"erasures\n{erasures.count}\n{erasures.digest.hex()}\n"
    return text.encode()
