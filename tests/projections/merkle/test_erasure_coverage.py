"""A checkpoint's coverage of the erasure log: its digest changes with any field of any
record, their order or their number; what is signed is the earlier text unless erasures
are covered, so checkpoints of a release before still verify; the JSON form round-trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from projections.merkle.checkpoint import Checkpoint, message
from projections.merkle.erasures import ErasureCoverage, covering, digest, problem
from projections.merkle.verify import InvalidCheckpoint, verify_checkpoint

RECORDS: list[dict[str, object]] = [
    {
        "position": n,
        "erasure_id": f"e{n}",
        "kind": "student",
        "erased_at": f"2026-12-0{n}T10:00:00+00:00",
        "actor": "admin",
        "reason": f"request {n}",
        "keys": 1,
        "lessons": n,
    }
    for n in (1, 2, 3)
]
TIME = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("field", sorted(RECORDS[0]))
def test_any_field_of_any_record_changes_the_digest(field: str) -> None:
    changed = [dict(record) for record in RECORDS]
    value = changed[1][field]
    changed[1][field] = value + 1 if isinstance(value, int) else f"{value}!"

    assert digest(changed) != digest(RECORDS)
    assert problem(covering(RECORDS), changed) is not None


def test_order_and_number_change_it_and_later_records_do_not() -> None:
    coverage = covering(RECORDS[:2])

    assert digest(list(reversed(RECORDS))) != digest(RECORDS)
    assert problem(coverage, RECORDS) is None  # a record after those covered
    assert problem(coverage, RECORDS[:2]) is None
    assert "some were removed" in (problem(coverage, RECORDS[:1]) or "")
    assert "do not make its digest" in (problem(coverage, [RECORDS[0], RECORDS[2]]) or "")
    assert covering([]) == ErasureCoverage(0, bytes(32))


def test_what_is_signed_is_the_earlier_text_unless_erasures_are_covered() -> None:
    earlier = f"lesson-ledger checkpoint\n5\n{'ab' * 32}\n{TIME.isoformat()}\n".encode()
    coverage = covering(RECORDS)

    assert message(5, bytes.fromhex("ab" * 32), TIME) == earlier
    assert message(5, bytes.fromhex("ab" * 32), TIME, coverage) == earlier + (
        f"erasures\n3\n{coverage.digest.hex()}\n".encode()
    )


def test_a_checkpoint_verifies_with_its_coverage_and_not_with_another() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    coverage = covering(RECORDS)
    root = bytes(32)
    made = Checkpoint(5, root, TIME, "k", key.sign(message(5, root, TIME, coverage)), coverage)
    earlier = Checkpoint(5, root, TIME, "k", key.sign(message(5, root, TIME)))

    verify_checkpoint(public, made)
    verify_checkpoint(public, earlier)  # a release before's: nothing covered
    assert Checkpoint.from_json(made.as_json()) == made
    assert Checkpoint.from_json(earlier.as_json()) == earlier
    assert "erasures" not in earlier.as_json()
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(public, Checkpoint(5, root, TIME, "k", made.signature, covering([])))
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(public, Checkpoint(5, root, TIME, "k", made.signature))
