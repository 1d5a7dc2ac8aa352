"""Re-anchoring: after a migration rewrote events the tree already covers (`students
encrypt-existing` seals what was stored in the clear), the tree takes the events' new
bytes, and a signed record keeps the old root, the new root, every leaf that changed
(old and new hash) and why. `audit verify` checks the record's signature and both roots,
shows it, and checks a checkpoint from before it against the log as it was then.

Only altered events can be re-anchored: a log with an event missing, inserted or moved is
refused (that is what `audit verify` is for).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from eventsourcing.persistence import ApplicationRecorder

from projections.merkle.checkpoint import Change, Reanchoring, Signer, reanchoring_message
from projections.merkle.compare import compare
from projections.merkle.log_tree import BLOCK, BLOCK_LEVEL, Block, LogTree, Node, perfect_in
from projections.merkle.tree import node_hash

ATTEMPTS = 5
"""Tries when the tree grows meanwhile (its follower runs beside a migration)."""


class ReanchorRefused(Exception):
    """The log differs from the tree by more than rewritten events."""


def reanchor(
    tree: LogTree, log: ApplicationRecorder, signer: Signer, reason: str, now: datetime
) -> Reanchoring | None:
    """Give the tree the log's current bytes of every altered event, with a signed record;
    None when nothing changed. ReanchorRefused if anything else differs."""
    for _ in range(ATTEMPTS):
        comparison = compare(tree.store, log)
        if comparison.intact:
            return None
        others = [f for f in comparison.findings if f.kind != "altered"]
        if others:
            raise ReanchorRefused(
                f"{len(others)} event(s) missing, inserted or moved (first: {others[0]}): "
                "not a migration's rewrite; see `lesson-ledger audit verify`"
            )
        new_leaves = {f.index: f.found for f in comparison.findings if f.found is not None}
        blocks, nodes, changes = _rewritten(tree, new_leaves)
        size = comparison.size
        old_root = tree.root(size)
        new_root = tree.root(size, blocks={b.index: b for b in blocks}, nodes=nodes)
        record = Reanchoring(
            size,
            old_root,
            new_root,
            now,
            reason,
            tuple(changes),
            signer.key_id,
            signer.sign(reanchoring_message(size, old_root, new_root, now, reason, changes)),
        )
        if tree.store.rewrite(comparison.position, blocks, list(_as_nodes(nodes)), record):
            return record
    raise ReanchorRefused(f"the tree kept moving: tried {ATTEMPTS} times")


def _rewritten(
    tree: LogTree, new_leaves: dict[int, bytes]
) -> tuple[list[Block], dict[tuple[int, int], bytes], list[Change]]:
    """The blocks with their new leaves, every stored perfect subtree above them made
    again, and the changes."""
    blocks = tree.store.blocks({index >> BLOCK_LEVEL for index in new_leaves})
    changes = []
    for index in sorted(new_leaves):
        block = blocks[index >> BLOCK_LEVEL]
        at = index & (BLOCK - 1)
        changes.append(Change(index, block.hashes[at], new_leaves[index]))
        block.hashes[at] = new_leaves[index]
    made = {
        (BLOCK_LEVEL, b.index): perfect_in(b.hashes) for b in blocks.values() if len(b.ids) == BLOCK
    }
    level, changed = BLOCK_LEVEL, set(made)
    while changed:
        parents = {(level + 1, index >> 1) for _, index in changed}
        stored_parents = tree.store.nodes(parents)  # only complete subtrees are stored
        siblings = {(level, i ^ 1) for _, i in changed} - set(made)
        known = {**tree.store.nodes(siblings), **made}
        for parent_level, parent in stored_parents:
            left, right = known[(level, parent * 2)], known[(level, parent * 2 + 1)]
            made[(parent_level, parent)] = node_hash(left, right)
        level, changed = level + 1, set(stored_parents)
    return list(blocks.values()), made, changes


def _as_nodes(nodes: dict[tuple[int, int], bytes]) -> Iterable[Node]:
    return ((level, index, node) for (level, index), node in nodes.items())
