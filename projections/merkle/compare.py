"""The log against its stored tree, event by event: what `audit verify` and a re-anchoring
find. The log's leaves are recomputed from the events as stored and walked beside the
tree's stored leaves; while they agree only the current pair is in memory. From the first
difference on, the rest of both is taken in and each difference named: an event altered
(same lesson and version, other bytes), missing (in the tree, not in the log), inserted
(in the log where the tree has nothing) or moved (in both, out of order).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from typing import Literal
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder

from projections.merkle.log_tree import TreeStore, event_of, leaf_of

READ_PAGE = 1000
Kind = Literal["altered", "missing", "inserted", "moved"]
OnLeaf = Callable[[int, bytes], None]
"""Told each of the log's leaves as it is recomputed: (its index, its hash)."""


@dataclass(frozen=True)
class Leaf:
    """One leaf: the event it is (lesson and version), its position and its hash."""

    position: int
    lesson_id: UUID
    version: int
    hash: bytes

    @property
    def key(self) -> tuple[UUID, int]:
        return self.lesson_id, self.version


@dataclass(frozen=True)
class Finding:
    """One event that is not as the tree has it."""

    kind: Kind
    lesson_id: UUID
    version: int
    position: int
    """Its notification id: in the log (in the tree's record, when missing)."""
    index: int
    """Its leaf index: in the tree (in the log's order, when inserted)."""
    found: bytes | None = field(default=None, repr=False, compare=False)
    """The leaf hash the log has for it now (altered)."""

    def __str__(self) -> str:
        where = "was at" if self.kind == "missing" else "at"
        return (
            f"{self.kind}: lesson {self.lesson_id} version {self.version} "
            f"({where} position {self.position}, leaf {self.index})"
        )


@dataclass
class Comparison:
    """What walking the log beside the tree found."""

    size: int
    """Leaves in the stored tree."""
    position: int
    """The last notification id the tree covers."""
    findings: list[Finding] = field(default_factory=list)
    first_divergence: int | None = None
    """The position (notification id) where the log first differs from the tree."""

    @property
    def intact(self) -> bool:
        return not self.findings


def compare(
    store: TreeStore,
    log: ApplicationRecorder,
    *,
    at: tuple[int, int] | None = None,
    on_leaf: OnLeaf | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Comparison:
    """The log's events up to the tree's position against the tree's leaves; `at`: the
    tree's (position, size) as the caller read it (else read now)."""
    position, size = at if at is not None else store.position()
    result = Comparison(size, position)
    # The tree goes on taking events while the log is walked (its follower does not
    # stop): its first `size` leaves are compared, as the log is up to `position`.
    stored = islice((Leaf(*row) for row in store.leaves()), size)
    logged = _log_leaves(log, position, on_leaf)
    for done, (ours, theirs) in enumerate(zip_longest(stored, logged)):
        if on_progress is not None and done % READ_PAGE == 0:
            on_progress(done)
        if ours is not None and theirs is not None and _same(ours, theirs):
            continue
        rest_stored = [*([ours] if ours else []), *stored]
        rest_logged = [*([theirs] if theirs else []), *logged]
        result.first_divergence = min(leaf.position for leaf in (ours, theirs) if leaf)
        result.findings = _differences(rest_stored, rest_logged, done)
        _moved_beyond(result.findings, log, position)
        break
    if on_progress is not None:
        on_progress(size)
    return result


def _same(ours: Leaf, theirs: Leaf) -> bool:
    """The same event with the same bytes (its notification id is not in the leaf)."""
    return ours.hash == theirs.hash and ours.key == theirs.key


def _log_leaves(
    log: ApplicationRecorder, upto: int | None, on_leaf: OnLeaf | None, after: int = 0
) -> Iterator[Leaf]:
    """The log's events after `after` up to `upto` (None: the end), as leaves, in order."""
    index = 0
    while upto is None or after < upto:
        page = log.select_notifications(
            start=after, limit=READ_PAGE, stop=upto, inclusive_of_start=False
        )
        if not page:
            return
        for notification in page:
            lesson_id, version = event_of(notification)
            leaf = Leaf(notification.id, lesson_id, version, leaf_of(notification))
            if on_leaf is not None:
                on_leaf(index, leaf.hash)
            index += 1
            yield leaf
        after = page[-1].id


def _moved_beyond(findings: list[Finding], log: ApplicationRecorder, position: int) -> None:
    """An event "missing" that the log holds after the tree's position was moved there
    (the rows after it renumbered, say): name it so, at its new position."""
    missing = {(f.lesson_id, f.version): n for n, f in enumerate(findings) if f.kind == "missing"}
    if not missing:
        return
    for leaf in _log_leaves(log, None, None, after=position):
        n = missing.pop(leaf.key, None)
        if n is not None:
            found = findings[n]
            findings[n] = Finding("moved", *leaf.key, leaf.position, found.index)
        if not missing:
            return


def _differences(stored: list[Leaf], logged: list[Leaf], offset: int) -> list[Finding]:
    """Name each difference between the rest of the tree and the rest of the log, which
    start at leaf `offset` of both."""
    in_tree = {leaf.key: (offset + i, leaf) for i, leaf in enumerate(stored)}
    in_log = {leaf.key: (offset + i, leaf) for i, leaf in enumerate(logged)}
    findings: list[Finding] = []
    for key, (index, leaf) in in_tree.items():
        if key not in in_log:
            findings.append(Finding("missing", *key, leaf.position, index))
        elif in_log[key][1].hash != leaf.hash:
            now = in_log[key][1]
            findings.append(Finding("altered", *key, now.position, index, found=now.hash))
    for key, (index, leaf) in in_log.items():
        if key not in in_tree:
            findings.append(Finding("inserted", *key, leaf.position, index))
    findings.extend(_moved(logged, in_tree))
    return sorted(findings, key=lambda f: (f.index, f.kind))


def _moved(logged: list[Leaf], in_tree: dict[tuple[UUID, int], tuple[int, Leaf]]) -> list[Finding]:
    """The events in both that are out of the tree's order: those outside the longest run
    that keeps it (a swap of two names both; a single event moved names it alone)."""
    both = [(in_tree[leaf.key][0], leaf) for leaf in logged if leaf.key in in_tree]
    kept = _longest_increasing([index for index, _ in both])
    findings = []
    for n, (index, leaf) in enumerate(both):
        if n not in kept:
            findings.append(Finding("moved", *leaf.key, leaf.position, index))
    if len(findings) == 1:
        # Two events swapped side by side leave a run that keeps one of them: name the
        # other too, the event it changed places with.
        moved = findings[0]
        n = next(n for n, (index, _) in enumerate(both) if index == moved.index)
        for m in (n - 1, n + 1):
            if 0 <= m < len(both) and abs(both[m][0] - moved.index) == 1:
                index, leaf = both[m]
                if (m < n) != (index < moved.index):
                    findings.append(Finding("moved", *leaf.key, leaf.position, index))
                    break
    return findings


def _longest_increasing(values: list[int]) -> set[int]:
    """The positions (in `values`) of a longest strictly increasing subsequence."""
    tails: list[int] = []
    tail_at: list[int] = []
    previous = [-1] * len(values)
    for n, value in enumerate(values):
        at = bisect.bisect_left(tails, value)
        if at == len(tails):
            tails.append(value)
            tail_at.append(n)
        else:
            tails[at], tail_at[at] = value, n
        previous[n] = tail_at[at - 1] if at > 0 else -1
    kept, n = set(), tail_at[-1] if tail_at else -1
    while n >= 0:
        kept.add(n)
        n = previous[n]
    return kept
