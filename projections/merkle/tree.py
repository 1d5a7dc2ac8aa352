"""The Merkle tree over the event log, as RFC 6962 (Certificate Transparency) defines it:
SHA-256, leaves hashed as `0x00 || data`, nodes as `0x01 || left || right`, a tree of n
leaves split at the largest power of two below n.

Every hash a tree needs is made of *perfect* subtrees (2^level leaves, aligned), which a
`Nodes` source gives: a store keeps them, so a root or a proof costs O(log n) of them,
fetched in one go (`needed` records which before `compute` reads them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol, TypeVar

EMPTY_ROOT = hashlib.sha256(b"").digest()
T = TypeVar("T")


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def event_leaf(lesson_id: bytes, version: int, topic: str, state: bytes) -> bytes:
    """A stored event's leaf data: its lesson id (16 bytes), version (8 bytes, big-endian),
    topic (4-byte length, UTF-8) and state, exactly as stored."""
    name = topic.encode()
    return lesson_id + version.to_bytes(8, "big") + len(name).to_bytes(4, "big") + name + state


class Nodes(Protocol):
    """Perfect subtrees' hashes: the MTH of leaves [index * 2^level, (index + 1) * 2^level)."""

    def perfect(self, level: int, index: int) -> bytes: ...


def root(nodes: Nodes, size: int) -> bytes:
    """MTH(D[0:size])."""
    return _mth(nodes, 0, size)


def inclusion_proof(nodes: Nodes, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 6962 2.1.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    return _path(nodes, index, 0, size)


def consistency_proof(nodes: Nodes, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) (RFC 6962 2.1.2): that the tree of `new` extends that of `old`."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    return _subproof(nodes, old, 0, new, True)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(nodes: Nodes, start: int, n: int) -> bytes:
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:  # a perfect subtree, aligned (every split keeps it so)
        level = n.bit_length() - 1
        return nodes.perfect(level, start >> level)
    k = _split(n)
    return node_hash(_mth(nodes, start, k), _mth(nodes, start + k, n - k))


def _path(nodes: Nodes, m: int, start: int, n: int) -> list[bytes]:
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(nodes, m, start, k), _mth(nodes, start + k, n - k)]
    return [*_path(nodes, m - k, start + k, n - k), _mth(nodes, start, k)]


def _subproof(nodes: Nodes, m: int, start: int, n: int, whole: bool) -> list[bytes]:
    if m == n:
        return [] if whole else [_mth(nodes, start, n)]
    k = _split(n)
    if m <= k:
        return [*_subproof(nodes, m, start, k, whole), _mth(nodes, start + k, n - k)]
    return [*_subproof(nodes, m - k, start + k, n - k, False), _mth(nodes, start, k)]


class _Wanted:
    """A Nodes that only notes what is asked (and answers with a placeholder)."""

    def __init__(self) -> None:
        self.asked: set[tuple[int, int]] = set()

    def perfect(self, level: int, index: int) -> bytes:
        self.asked.add((level, index))
        return EMPTY_ROOT


def needed(compute: Callable[[Nodes], T]) -> set[tuple[int, int]]:
    """Which perfect subtrees `compute` asks for (to fetch them all at once)."""
    wanted = _Wanted()
    compute(wanted)
    return wanted.asked


class Frontier:
    """The tree of a stream of leaves, kept as its perfect subtrees along the right edge
    (O(log n) hashes): its root at any size while the stream goes by (`audit verify`)."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; the perfect subtrees it completes, as (level, index, hash)."""
        completed = [(0, self.size, leaf)]
        level, current = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            current, level = node_hash(left, current), level + 1
            completed.append((level, self.size >> level, current))
        self._stack.append((level, current))
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        hashes = [h for _, h in self._stack]
        current = hashes[-1]
        for left in reversed(hashes[:-1]):
            current = node_hash(left, current)
        return current
