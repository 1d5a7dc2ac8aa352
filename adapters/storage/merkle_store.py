"""The Merkle tree's tables, on SQLite or PostgreSQL alike (projections/merkle/log_tree.py
says what they hold): `merkle_blocks`, `merkle_nodes`, `merkle_position`, and the signed
`merkle_checkpoints` (with `merkle_checkpoint_erasures`, the erasure records each covers)
and `merkle_reanchorings`."""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.storage.sqlstore import SqlStore
from projections.merkle.checkpoint import Checkpoint, Reanchoring, unpack
from projections.merkle.erasures import ErasureCoverage
from projections.merkle.log_tree import BLOCK_LEVEL, NAME, Block, Node

_ID = struct.Struct(">q")


class MerkleStore:
    """The tree's blocks, nodes and position, and the checkpoints signed over it."""

    def __init__(self, sql: SqlStore, events_table: str) -> None:
        self.sql = sql
        self.events_table = events_table
        self._postgres = sql.database.kind == "postgresql"
        self.blocks_table = sql.table("merkle_blocks")
        self.nodes_table = sql.table("merkle_nodes")
        self.position_table = sql.table("merkle_position")
        self.checkpoints_table = sql.table("merkle_checkpoints")
        self.coverage_table = sql.table("merkle_checkpoint_erasures")
        self.reanchorings_table = sql.table("merkle_reanchorings")
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.blocks_table} (block BIGINT PRIMARY KEY,"
            " first_id BIGINT NOT NULL, ids BYTEA NOT NULL, hashes BYTEA NOT NULL,"
            " events BYTEA NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS merkle_blocks_first_id ON {self.blocks_table} (first_id)",
            f"CREATE TABLE IF NOT EXISTS {self.nodes_table} (level INTEGER NOT NULL,"
            " idx BIGINT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY (level, idx))",
            f"CREATE TABLE IF NOT EXISTS {self.position_table} (name TEXT PRIMARY KEY,"
            " position BIGINT NOT NULL, size BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints_table} (size BIGINT NOT NULL,"
            " root BYTEA NOT NULL, time TEXT NOT NULL, key_id TEXT NOT NULL,"
            " signature BYTEA NOT NULL, PRIMARY KEY (time, size))",
            # The erasure records a checkpoint covers (checkpoints of a release before
            # have none): a table of its own, so an earlier release's table needs no change.
            f"CREATE TABLE IF NOT EXISTS {self.coverage_table} (time TEXT NOT NULL,"
            " size BIGINT NOT NULL, count BIGINT NOT NULL, digest BYTEA NOT NULL,"
            " PRIMARY KEY (time, size))",
            f"CREATE TABLE IF NOT EXISTS {self.reanchorings_table} (time TEXT PRIMARY KEY,"
            " size BIGINT NOT NULL, old_root BYTEA NOT NULL, new_root BYTEA NOT NULL,"
            " reason TEXT NOT NULL, changes BYTEA NOT NULL, key_id TEXT NOT NULL,"
            " signature BYTEA NOT NULL)",
            f"INSERT INTO {self.position_table} (name, position, size) VALUES ('{NAME}', 0, 0)"
            " ON CONFLICT (name) DO NOTHING",
        )

    # The tree.

    def position(self) -> tuple[int, int]:
        rows = self.sql.run(
            f"SELECT position, size FROM {self.position_table} WHERE name = %s", (NAME,)
        )
        return int(rows[0][0]), int(rows[0][1])

    def append(
        self, expected: int, blocks: Sequence[Block], nodes: Sequence[Node], at: int
    ) -> bool:
        with self.sql.transaction() as cursor:
            if not self._still_at(cursor, expected):
                return False
            for block in blocks:
                cursor.run(
                    f"INSERT INTO {self.blocks_table} (block, first_id, ids, hashes, events)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (block) DO UPDATE"
                    " SET ids = excluded.ids, hashes = excluded.hashes, events = excluded.events",
                    (
                        block.index,
                        block.ids[0],
                        _packed(block.ids),
                        b"".join(block.hashes),
                        b"".join(
                            lesson.bytes + _ID.pack(version) for lesson, version in block.events
                        ),
                    ),
                )
            for level, index, node in nodes:
                cursor.run(
                    f"INSERT INTO {self.nodes_table} (level, idx, hash) VALUES (%s, %s, %s)"
                    " ON CONFLICT (level, idx) DO NOTHING",
                    (level, index, node),
                )
            size = (blocks[-1].index << BLOCK_LEVEL) + len(blocks[-1].ids)
            cursor.run(
                f"UPDATE {self.position_table} SET position = %s, size = %s WHERE name = %s",
                (at, size, NAME),
            )
        return True

    def _still_at(self, cursor: Any, expected: int) -> bool:
        """Whether the tree is still at `expected`, its position row locked (PostgreSQL)
        for the rest of the transaction, so that no other writer moves it meanwhile."""
        lock = " FOR UPDATE" if self._postgres else ""
        found = cursor.run(
            f"SELECT position FROM {self.position_table} WHERE name = %s{lock}", (NAME,)
        )
        return int(found[0][0]) == expected

    def block(self, index: int) -> Block:
        return self.blocks({index}).get(index) or Block(index)

    def blocks(self, indexes: set[int]) -> dict[int, Block]:
        if not indexes:
            return {}
        marks = ", ".join(["%s"] * len(indexes))
        rows = self.sql.run(
            f"SELECT block, ids, hashes, events FROM {self.blocks_table} WHERE block IN ({marks})",
            sorted(indexes),
        )
        return {int(row[0]): _block(row) for row in rows}

    def nodes(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not wanted:
            return {}
        where = " OR ".join(["(level = %s AND idx = %s)"] * len(wanted))
        params = [part for pair in sorted(wanted) for part in pair]
        rows = self.sql.run(
            f"SELECT level, idx, hash FROM {self.nodes_table} WHERE {where}", params
        )
        return {(int(level), int(index)): bytes(node) for level, index, node in rows}

    def leaf_index(self, notification_id: int) -> int | None:
        rows = self.sql.run(
            f"SELECT block, ids, hashes, events FROM {self.blocks_table} WHERE first_id <= %s"
            " ORDER BY first_id DESC LIMIT 1",
            (notification_id,),
        )
        if not rows:
            return None
        block = _block(rows[0])
        at = bisect.bisect_left(block.ids, notification_id)
        if at == len(block.ids) or block.ids[at] != notification_id:
            return None
        return (block.index << BLOCK_LEVEL) + at

    def leaves(self) -> Iterator[tuple[int, UUID, int, bytes]]:
        after = -1
        while True:
            rows = self.sql.run(
                f"SELECT block, ids, hashes, events FROM {self.blocks_table} WHERE block > %s"
                " ORDER BY block LIMIT 200",
                (after,),
            )
            if not rows:
                return
            for row in rows:
                block = _block(row)
                for notification_id, leaf, (lesson, version) in zip(
                    block.ids, block.hashes, block.events, strict=True
                ):
                    yield notification_id, lesson, version, leaf
            after = int(rows[-1][0])

    def rewrite(
        self, expected: int, blocks: Sequence[Block], nodes: Sequence[Node], record: Reanchoring
    ) -> bool:
        with self.sql.transaction() as cursor:
            if not self._still_at(cursor, expected):
                return False
            for block in blocks:
                cursor.run(
                    f"UPDATE {self.blocks_table} SET hashes = %s WHERE block = %s",
                    (b"".join(block.hashes), block.index),
                )
            for level, index, node in nodes:
                cursor.run(
                    f"UPDATE {self.nodes_table} SET hash = %s WHERE level = %s AND idx = %s",
                    (node, level, index),
                )
            cursor.run(
                f"INSERT INTO {self.reanchorings_table} (time, size, old_root, new_root,"
                " reason, changes, key_id, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.time.isoformat(),
                    record.size,
                    record.old_root,
                    record.new_root,
                    record.reason,
                    record.packed_changes(),
                    record.key_id,
                    record.signature,
                ),
            )
        return True

    def reanchorings(self) -> list[Reanchoring]:
        rows = self.sql.run(
            f"SELECT size, old_root, new_root, time, reason, changes, key_id, signature"
            f" FROM {self.reanchorings_table} ORDER BY time"
        )
        return [
            Reanchoring(
                int(size),
                bytes(old_root),
                bytes(new_root),
                datetime.fromisoformat(time),
                reason,
                unpack(bytes(changes)),
                key_id,
                bytes(signature),
            )
            for size, old_root, new_root, time, reason, changes, key_id, signature in rows
        ]

    # The events the tree covers.

    def count_events_after(self, position: int) -> int:
        """Events recorded after `position` (the tree's lag; ids have gaps)."""
        column = "notification_id" if self._postgres else "rowid"
        rows = self.sql.run(
            f"SELECT count(*) FROM {self.events_table} WHERE {column} > %s", (position,)
        )
        return int(rows[0][0])

    def positions(self, lesson_id: UUID) -> dict[int, int]:
        """Each version of a lesson's events and its position (notification id)."""
        if self._postgres:
            rows = self.sql.run(
                f"SELECT originator_version, notification_id FROM {self.events_table}"
                " WHERE originator_id = %s",
                (lesson_id,),
            )
        else:  # the library's SQLite recorder keeps the id as text, hyphenated or not
            rows = self.sql.run(
                f"SELECT originator_version, rowid FROM {self.events_table}"
                " WHERE originator_id IN (%s, %s)",
                (str(lesson_id), lesson_id.hex),
            )
        return {int(version): int(position) for version, position in rows}

    # Checkpoints.

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        at = checkpoint.time.isoformat()
        with self.sql.transaction() as cursor:
            cursor.run(
                f"INSERT INTO {self.checkpoints_table} (size, root, time, key_id, signature)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (checkpoint.size, checkpoint.root, at, checkpoint.key_id, checkpoint.signature),
            )
            if checkpoint.erasures is not None:
                cursor.run(
                    f"INSERT INTO {self.coverage_table} (time, size, count, digest)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (at, checkpoint.size, checkpoint.erasures.count, checkpoint.erasures.digest),
                )

    def latest_checkpoint(self) -> Checkpoint | None:
        rows = self.sql.run(
            "SELECT c.size, c.root, c.time, c.key_id, c.signature, e.count, e.digest"
            f" FROM {self.checkpoints_table} c LEFT JOIN {self.coverage_table} e"
            " ON e.time = c.time AND e.size = c.size"
            " ORDER BY c.time DESC, c.size DESC LIMIT 1"
        )
        if not rows:
            return None
        size, root, time, key_id, signature, count, digest = rows[0]
        erasures = None if count is None else ErasureCoverage(int(count), bytes(digest))
        return Checkpoint(
            int(size),
            bytes(root),
            datetime.fromisoformat(time),
            key_id,
            bytes(signature),
            erasures,
        )


def _packed(ids: Sequence[int]) -> bytes:
    return b"".join(_ID.pack(i) for i in ids)


def _block(row: Sequence[Any]) -> Block:
    index, ids, hashes, events = int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3])
    count = len(ids) // 8
    return Block(
        index,
        list(struct.unpack(f">{count}q", ids)),
        [hashes[i * 32 : (i + 1) * 32] for i in range(count)],
        [
            (
                UUID(bytes=events[i * 24 : i * 24 + 16]),
                _ID.unpack(events[i * 24 + 16 : i * 24 + 24])[0],
            )
            for i in range(count)
        ],
    )
