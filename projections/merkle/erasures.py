"""Erasure records under the ledger's signature: a checkpoint covers the first `count`
records of the erasure log (in the order they were recorded) by a digest of them, so an
auditor holding it can prove later that none of those was altered, removed or slipped
in among them (docs/decisions/0059-erasures-covered-by-checkpoints.md).

The digest is a chain: SHA-256 over the previous link and each record as sorted, compact
JSON, from 32 zero bytes; the records hold no personal data (adapters/keys/erasure.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

START = bytes(32)


@dataclass(frozen=True)
class ErasureCoverage:
    """How many erasure records a checkpoint covers, and their digest."""

    count: int
    digest: bytes

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "digest": self.digest.hex()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErasureCoverage:
        return cls(int(data["count"]), bytes.fromhex(data["digest"]))


def covering(records: Sequence[Mapping[str, object]]) -> ErasureCoverage:
    """The coverage of every record given, in their order."""
    return ErasureCoverage(len(records), digest(records))


def digest(records: Sequence[Mapping[str, object]]) -> bytes:
    link = START
    for record in records:
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        link = hashlib.sha256(link + text.encode()).digest()
    return link


def problem(coverage: ErasureCoverage, records: Sequence[Mapping[str, object]]) -> str | None:
    """What is wrong with the erasure log against a checkpoint's coverage (None: the
    records it covers are as they were)."""
    if len(records) < coverage.count:
        return (
            f"it covers {coverage.count} erasure records; the erasure log holds "
            f"{len(records)}: some were removed"
        )
    if digest(records[: coverage.count]) != coverage.digest:
        return (
            f"the first {coverage.count} erasure records do not make its digest: one was "
            "altered, removed or slipped in among them"
        )
    return None
