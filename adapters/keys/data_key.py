"""A data key as the ledger holds it in memory, and one made but not stored yet."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class DataKey:
    """An owner's key: its id (stored with what it seals) and its bytes."""

    key_id: str
    key: bytes = field(repr=False)  # never in a log or a test's failure
    cipher: AESGCM = field(repr=False)
    owner: str


@dataclass(frozen=True)
class UnsavedKey:
    """A key made, wrapped for its row, not stored yet."""

    key: DataKey = field(repr=False)
    wrapped: str = field(repr=False)
    kek_id: str

    @property
    def row(self) -> tuple[str, str, str, str]:
        """(key id, owner, wrapped key, key-encryption key id), as the key table holds."""
        return (self.key.key_id, self.key.owner, self.wrapped, self.kek_id)
