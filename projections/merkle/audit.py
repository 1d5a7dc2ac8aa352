"""`audit verify`: the tree made again from the events as stored, checked against the
stored tree (every event, and the root its nodes make), against each re-anchoring (signed,
and both its roots those of the log before and after it) and, when given, against an
earlier checkpoint (signed by the ledger's key; its root that of the log's first events
as they were then; the stored tree a consistent extension of it; the erasure records it
covers as they were then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import ApplicationRecorder

from projections.merkle.checkpoint import Checkpoint, Reanchoring
from projections.merkle.compare import Comparison, compare
from projections.merkle.erasures import problem as erasures_problem
from projections.merkle.log_tree import LogTree
from projections.merkle.tree import Frontier
from projections.merkle.verify import (
    InvalidCheckpoint,
    signed_by,
    verify_checkpoint,
    verify_consistency,
)


@dataclass
class _View:
    """The log's first `size` leaves as they were at some time: today's, with the leaves
    that later re-anchorings changed put back (`earlier`); its root once complete."""

    size: int
    earlier: dict[int, bytes]
    frontier: Frontier = field(default_factory=Frontier)
    root: bytes | None = None

    def __post_init__(self) -> None:
        if self.size == 0:  # complete already: the empty tree's root (RFC 6962)
            self.root = self.frontier.root()

    def add(self, index: int, leaf: bytes) -> None:
        if index < self.size:
            self.frontier.append(self.earlier.get(index, leaf))
            if self.frontier.size == self.size:
                self.root = self.frontier.root()


@dataclass(frozen=True)
class RecordCheck:
    """A signed record (checkpoint or re-anchoring) as checked; `problem` says what
    failed (None: it holds)."""

    record: Checkpoint | Reanchoring
    problem: str | None

    def as_json(self) -> dict[str, Any]:
        return {**self.record.as_json(), "ok": self.problem is None, "problem": self.problem}


@dataclass
class AuditReport:
    """What `audit verify` found."""

    comparison: Comparison
    tree_root_ok: bool
    reanchorings: list[RecordCheck]
    checkpoint: RecordCheck | None

    @property
    def ok(self) -> bool:
        return (
            self.comparison.intact
            and self.tree_root_ok
            and all(check.problem is None for check in self.reanchorings)
            and (self.checkpoint is None or self.checkpoint.problem is None)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "intact": self.comparison.intact,
            "size": self.comparison.size,
            "position": self.comparison.position,
            "first_divergence": self.comparison.first_divergence,
            "findings": [
                {
                    "kind": f.kind,
                    "lesson_id": str(f.lesson_id),
                    "version": f.version,
                    "position": f.position,
                    "leaf": f.index,
                }
                for f in self.comparison.findings
            ],
            "tree_root_ok": self.tree_root_ok,
            "reanchorings": [check.as_json() for check in self.reanchorings],
            "checkpoint": None if self.checkpoint is None else self.checkpoint.as_json(),
        }


def audit(
    tree: LogTree,
    log: ApplicationRecorder,
    public_key: bytes,
    *,
    against: Checkpoint | None = None,
    erasures: Sequence[Mapping[str, object]] = (),
    on_progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Walk the log once, checking everything the module docstring says; `erasures`: the
    erasure log's records, in order (adapters/keys/erasure.py)."""
    # One look at the tree: its follower may add events while the log is walked.
    position, size = tree.store.position()
    records = tree.store.reanchorings()
    today = _View(size, {})
    after = [_View(r.size, _earlier(records[n + 1 :])) for n, r in enumerate(records)]
    before = [_View(r.size, _earlier(records[n:])) for n, r in enumerate(records)]
    then = None
    if against is not None:
        then = _View(against.size, _earlier([r for r in records if r.time > against.time]))
    views = [today, *after, *before, *([then] if then is not None else [])]

    def on_leaf(index: int, leaf: bytes) -> None:
        for view in views:
            view.add(index, leaf)

    comparison = compare(
        tree.store, log, at=(position, size), on_leaf=on_leaf, on_progress=on_progress
    )
    stored_root = tree.root(comparison.size)
    checks = [
        _reanchoring_check(r, public_key, before[n].root, after[n].root)
        for n, r in enumerate(records)
    ]
    checkpoint = None
    if against is not None and then is not None:
        checkpoint = _checkpoint_check(
            tree, against, public_key, then, (comparison.size, stored_root), records
        )
        if checkpoint.problem is None and against.erasures is not None:
            checkpoint = RecordCheck(against, erasures_problem(against.erasures, erasures))
    return AuditReport(comparison, today.root == stored_root, checks, checkpoint)


def _earlier(later: Sequence[Reanchoring]) -> dict[int, bytes]:
    """Each leaf these re-anchorings changed, as it was before the first of them."""
    earlier: dict[int, bytes] = {}
    for record in reversed(later):  # the older record's old leaf wins
        earlier.update((change.index, change.old) for change in record.changes)
    return earlier


def _reanchoring_check(
    record: Reanchoring, public_key: bytes, old: bytes | None, new: bytes | None
) -> RecordCheck:
    if not signed_by(public_key, record.signature, record.message()):
        return RecordCheck(record, "not signed by the ledger's key")
    if new != record.new_root:
        return RecordCheck(record, "its new root is not the log's as it is now")
    if old != record.old_root:
        return RecordCheck(record, "its old root is not the log's with its changes undone")
    return RecordCheck(record, None)


def _checkpoint_check(
    tree: LogTree,
    checkpoint: Checkpoint,
    public_key: bytes,
    then: _View,
    stored: tuple[int, bytes],
    records: Sequence[Reanchoring],
) -> RecordCheck:
    """`stored`: the tree's size and root as the walk saw them."""
    size, stored_root = stored
    try:
        verify_checkpoint(public_key, checkpoint)
    except InvalidCheckpoint as error:
        return RecordCheck(checkpoint, str(error))
    if checkpoint.size > size:
        return RecordCheck(checkpoint, f"it covers {checkpoint.size} events; the tree has {size}")
    if then.root != checkpoint.root:
        return RecordCheck(
            checkpoint, f"the log's first {checkpoint.size} events do not make its root"
        )
    # Every tree extends the empty one (RFC 6962 has no proof for it, and needs none).
    if checkpoint.size > 0 and not any(r.time > checkpoint.time for r in records):
        proof = tree.consistency_proof(checkpoint.size, size)
        if not verify_consistency(checkpoint.size, checkpoint.root, size, stored_root, proof):
            return RecordCheck(checkpoint, "the stored tree does not extend it")
    return RecordCheck(checkpoint, None)
