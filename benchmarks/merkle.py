"""The tamper-evident log in `make bench`: building the Merkle tree over the whole stored
log from nothing (as a new deployment's follower does), and the latency of a proof at
that size (the proof of one event, as `history?proof=true` gives it for each event, and a
consistency proof from a random earlier size)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from adapters.audit.ledger_audit import open_audit
from adapters.eventstore import open_ledger
from adapters.storage.database import Database
from benchmarks.reads import Latency, timed
from benchmarks.stores import StoreSpec


@dataclass(frozen=True)
class TreeFigures:
    events: int
    seconds: float
    proof: Latency
    consistency: Latency

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def measure(spec: StoreSpec, samples: int) -> TreeFigures:
    """Build the tree from the first event, then time proofs at its size."""
    ledger = open_ledger(spec.ledger_url)
    audit = open_audit(Database.from_url(spec.ledger_url), ledger)
    try:
        began = time.perf_counter()
        audit.catch_up()
        seconds = time.perf_counter() - began
        size = audit.tree.size()
        checkpoint = audit.checkpoint()
        positions = _sample_positions(audit, samples)
        rng = random.Random(11)

        def proof() -> Any:
            position = rng.choice(positions)
            return lambda: audit.proof_at(position, checkpoint)

        def consistency() -> Any:
            old = rng.randrange(1, size + 1)
            return lambda: audit.consistency(old, checkpoint)

        return TreeFigures(size, seconds, timed(proof, samples), timed(consistency, samples))
    finally:
        audit.close()
        ledger.close()


def _sample_positions(audit: Any, samples: int) -> list[int]:
    """Positions of events spread over the whole log (read from its tree's blocks)."""
    rng = random.Random(5)
    size = audit.tree.size()
    blocks = audit.store.blocks({rng.randrange(size) >> 8 for _ in range(min(samples, 500))})
    return [position for block in blocks.values() for position in block.ids]


def table_rows(f: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    if "merkle_build_events_per_s" not in f:
        return []
    targets = f.get("targets", {})
    return [
        (
            f"Merkle tree of the log built from nothing, {f['merkle_events']:,} events (events/s)",
            f"{f['merkle_build_events_per_s']:,.0f}",
            "",
            "",
            str(targets.get("merkle_build_events_per_s", "")),
        ),
        (
            "an event's inclusion proof, p50 / p99 (ms)",
            f"{f['merkle_proof_p50_ms']:.2f} / {f['merkle_proof_p99_ms']:.2f}",
            "",
            "",
            str(targets.get("merkle_proof_p99_ms", "")),
        ),
        (
            "a consistency proof, p50 / p99 (ms)",
            f"{f['merkle_consistency_p50_ms']:.2f} / {f['merkle_consistency_p99_ms']:.2f}",
            "",
            "",
            "",
        ),
    ]
