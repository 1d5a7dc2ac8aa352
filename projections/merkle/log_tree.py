"""The Merkle tree of the event log, kept as a projection: a page of the log per
transaction, its leaves, the perfect subtrees they complete and the position after them
written together (exactly once, also after a crash), by one active runner across
processes (projections/active_runner.py). The command path pays nothing for it.

Leaves are kept in blocks of 256 (their notification ids and leaf hashes), perfect
subtrees of 256 leaves and more as nodes; smaller ones are computed from a block. So a
root or a proof at a million events reads a few rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Notification

from projections.active_runner import ActiveRunner, OnState
from projections.merkle.checkpoint import Reanchoring
from projections.merkle.tree import Nodes, event_leaf, leaf_hash, needed, node_hash
from projections.merkle.tree import consistency_proof as _consistency
from projections.merkle.tree import inclusion_proof as _inclusion
from projections.merkle.tree import root as _root
from projections.view import RunnerLock, Wakeup

BLOCK_LEVEL = 8
BLOCK = 1 << BLOCK_LEVEL
PAGE_SIZE = 1000
IDLE_RECHECK_SECONDS = 5.0
PACE_SECONDS = 0.5
"""The least time between two looks of an active tree follower that found news."""
NAME = "merkle"
T = TypeVar("T")
Node = tuple[int, int, bytes]
"""A perfect subtree: (level, index, hash)."""
OnPage = Callable[[int, int], None]
"""Told after each page the tree took: (its position, its size)."""


@dataclass
class Block:
    """Up to 256 consecutive leaves: their notification ids, hashes, and the events they
    are (lesson id and version: what `audit verify` names when one goes missing)."""

    index: int
    ids: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    events: list[tuple[UUID, int]] = field(default_factory=list)


class TreeStore(Protocol):
    """Where the tree is kept (adapters/storage/merkle_store.py)."""

    def position(self) -> tuple[int, int]:
        """(the last notification id covered, the tree's size)."""
        ...

    def append(
        self,
        expected: int,
        blocks: Sequence[Block],
        nodes: Sequence[tuple[int, int, bytes]],
        at: int,
    ) -> bool:
        """In one transaction, if the stored position is still `expected`: write the
        (new or grown) blocks and the completed nodes, and move the position to `at` (the
        size follows the blocks). False, writing nothing, when it moved."""
        ...

    def block(self, index: int) -> Block:
        """A block as stored (empty when there is none yet)."""
        ...

    def nodes(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored perfect subtrees of BLOCK_LEVEL and above."""
        ...

    def blocks(self, indexes: set[int]) -> dict[int, Block]:
        """Stored blocks by index."""
        ...

    def leaf_index(self, notification_id: int) -> int | None:
        """The index of the leaf of this notification, if the tree has it."""
        ...

    def leaves(self) -> Iterator[tuple[int, UUID, int, bytes]]:
        """Every stored leaf, in order: (notification id, lesson id, version, leaf hash)."""
        ...

    def rewrite(
        self, expected: int, blocks: Sequence[Block], nodes: Sequence[Node], record: Reanchoring
    ) -> bool:
        """In one transaction, if the stored position is still `expected`: replace these
        blocks' leaves and these nodes, and keep the re-anchoring `record`
        (projections/merkle/reanchor.py). False, writing nothing, when it moved."""
        ...

    def reanchorings(self) -> list[Reanchoring]:
        """Every re-anchoring kept, oldest first."""
        ...


def event_of(notification: Notification) -> tuple[UUID, int]:
    """The event a notification is: its lesson id and version."""
    originator_id = notification.originator_id
    lesson_id = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    return lesson_id, notification.originator_version


def leaf_data(notification: Notification) -> bytes:
    """A stored event's leaf data, from its bytes as stored."""
    lesson_id, version = event_of(notification)
    state: bytes | str = notification.state
    # SQLite stores what it is given: an edited row's state may have become text.
    raw = state.encode() if isinstance(state, str) else bytes(state)
    return event_leaf(lesson_id.bytes, version, notification.topic, raw)


def leaf_of(notification: Notification) -> bytes:
    """The leaf hash of a stored event."""
    return leaf_hash(leaf_data(notification))


class LogTree:
    """The tree over the log: follow it (`advance`), and read roots and proofs."""

    def __init__(self, store: TreeStore, log: ApplicationRecorder) -> None:
        self.store = store
        self.log = log

    # Following the log.

    def advance(
        self,
        page_size: int = PAGE_SIZE,
        upto: int | None = None,
        *,
        check: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
        on_page: OnPage | None = None,
    ) -> int:
        """Add the log's events after the stored position, a page per transaction, up to
        the end of the log (or `upto`); the position reached. `check` runs before each
        page (a runner's lock still held), `on_page` after it (position, size)."""
        position, size = self.store.position()
        while (upto is None or position < upto) and not (stop is not None and stop.is_set()):
            if check is not None:
                check()
            page = self.log.select_notifications(
                start=position, limit=page_size, stop=upto, inclusive_of_start=False
            )
            if not page:
                break
            blocks, nodes = self._grown(size, page)
            at = page[-1].id
            if self.store.append(position, blocks, nodes, at):
                position, size = at, size + len(page)
            else:
                position, size = self.store.position()
            if on_page is not None:
                on_page(position, size)
        return position

    def _grown(self, size: int, page: Sequence[Notification]) -> tuple[list[Block], list[Node]]:
        """The blocks the page's leaves go into, and the perfect subtrees (of a block and
        more) they complete."""
        block = self.store.block(size >> BLOCK_LEVEL)
        blocks, nodes = [block], []
        made: dict[tuple[int, int], bytes] = {}
        for notification in page:
            if len(block.ids) == BLOCK:
                block = Block(block.index + 1)
                blocks.append(block)
            block.ids.append(notification.id)
            block.hashes.append(leaf_of(notification))
            block.events.append(event_of(notification))
            if len(block.ids) == BLOCK:
                for level, index, node in self._completed(block, made):
                    made[(level, index)] = node
                    nodes.append((level, index, node))
        return blocks, nodes

    def _completed(
        self, block: Block, made: dict[tuple[int, int], bytes]
    ) -> list[tuple[int, int, bytes]]:
        level, index, node = BLOCK_LEVEL, block.index, perfect_in(block.hashes)
        completed = [(level, index, node)]
        while index & 1:
            left = (
                made.get((level, index - 1))
                or self.store.nodes({(level, index - 1)})[(level, index - 1)]
            )
            level, index, node = level + 1, index >> 1, node_hash(left, node)
            completed.append((level, index, node))
        return completed

    # Reading.

    def size(self) -> int:
        return self.store.position()[1]

    def root(
        self,
        size: int,
        *,
        blocks: dict[int, Block] | None = None,
        nodes: dict[tuple[int, int], bytes] | None = None,
    ) -> bytes:
        """The root of the first `size` leaves; with `blocks` and `nodes` standing in for
        the stored ones (a re-anchoring's new root, before it is written)."""
        return self._with_nodes(lambda n: _root(n, size), blocks or {}, nodes or {})

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._with_nodes(lambda nodes: _inclusion(nodes, index, size))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return self._with_nodes(lambda nodes: _consistency(nodes, old, new))

    def _with_nodes(
        self,
        compute: Callable[[Nodes], T],
        blocks: dict[int, Block] | None = None,
        nodes: dict[tuple[int, int], bytes] | None = None,
    ) -> T:
        blocks, nodes = blocks or {}, nodes or {}
        wanted = needed(compute)
        high = {(level, index) for level, index in wanted if level >= BLOCK_LEVEL}
        low = {index >> (BLOCK_LEVEL - level) for level, index in wanted if level < BLOCK_LEVEL}
        fetched_nodes = {**self.store.nodes(high - set(nodes)), **nodes}
        fetched_blocks = {**self.store.blocks(low - set(blocks)), **blocks}
        return compute(_Fetched(fetched_nodes, fetched_blocks))


class _Fetched:
    """The nodes a computation asked for, fetched."""

    def __init__(self, high: dict[tuple[int, int], bytes], blocks: dict[int, Block]) -> None:
        self.high, self.blocks = high, blocks

    def perfect(self, level: int, index: int) -> bytes:
        if level >= BLOCK_LEVEL:
            return self.high[(level, index)]
        block = self.blocks[index >> (BLOCK_LEVEL - level)]
        first = (index << level) - (block.index << BLOCK_LEVEL)
        return perfect_in(block.hashes[first : first + (1 << level)])


def perfect_in(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect run of leaf hashes."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(a, b) for a, b in zip(level[::2], level[1::2], strict=True)]
    return level[0]


class TreeFollower(ActiveRunner):
    """Keeps the tree current: the one active runner of the tree across processes."""

    name = "merkle tree"
    logger = logging.getLogger("lesson_ledger.merkle")

    def __init__(
        self,
        tree: LogTree,
        lock: RunnerLock,
        wakeup: Wakeup,
        *,
        on_state: OnState | None = None,
        after_advance: Callable[[], None] | None = None,
    ) -> None:
        """`after_advance`: run by the active runner once the tree is at the log's end (a
        checkpoint when one is due)."""
        super().__init__(lock, wakeup, on_state=on_state)
        self.tree = tree
        self._after_advance = after_advance

    def _activate(self) -> str:
        position, size = self.tree.store.position()
        return f"from position {position}, {size} leaves"

    def _work(self) -> None:
        self._lock.check()
        before, _ = self.tree.store.position()
        self._progressed = self.tree.advance(check=self._lock.check, stop=self._stop) != before
        if self._after_advance is not None:
            self._after_advance()
        if self._progressed:
            # Each look rewrites the tail block (up to a block of leaves): under a steady
            # stream of commands, a look every PACE_SECONDS writes it far less often.
            self._stop.wait(PACE_SECONDS)
        self._wakeup.wait(IDLE_RECHECK_SECONDS)
