"""A checkpoint: the tree's size and root at a time, signed (Ed25519) by the ledger.

What is signed is the text `lesson-ledger checkpoint\\n<size>\\n<root hex>\\n<time>\\n`;
the JSON form (`as_json`, `from_json`) is what `lesson-ledger audit checkpoint` writes and
`GET /v1/audit/checkpoint` answers: it holds no secret.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head."""

    size: int
    root: bytes
    time: datetime
    key_id: str
    """The first 16 hex digits of the SHA-256 of the signing key's public bytes."""
    signature: bytes

    def message(self) -> bytes:
        return message(self.size, self.root, self.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "time": self.time.isoformat(),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

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
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a checkpoint: {error}") from None


def message(size: int, root: bytes, time: datetime) -> bytes:
    """What the ledger signs for a tree of `size` leaves and this root, at `time`."""
    return f"lesson-ledger checkpoint\n{size}\n{root.hex()}\n{time.isoformat()}\n".encode()
