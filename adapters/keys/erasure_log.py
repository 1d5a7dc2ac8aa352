"""The erasure log: every erasure as recorded (`erasures`: kind, when, who, why, how many
keys and lessons; nothing of the student), each placed in the order it was recorded
(`erasure_positions`), so that signed checkpoints can cover them
(projections/merkle/erasures.py, docs/decisions/0059-erasures-covered-by-checkpoints.md).

Records are placed one writer at a time (an advisory lock on PostgreSQL, SQLite's write
lock): positions run 1, 2, 3, ... with no gap, and a record never lands before one that
a checkpoint already covers. Records of a release before positions are placed, in the
order of their times, by the first writer or checkpoint that meets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from adapters.storage.sqlstore import Cursor, SqlStore

ErasureKind = Literal["student", "retention"]
"""One student's key, or the keys of lesson dates before a cut-off."""
COLUMNS = ("erasure_id", "kind", "erased_at", "actor", "reason", "keys", "lessons")


@dataclass(frozen=True)
class Erasure:
    """One erasure, as recorded: what kind, when, who, why, how much it reached."""

    erasure_id: str
    kind: ErasureKind
    erased_at: datetime
    actor: str
    reason: str
    keys: int
    lessons: int


class ErasureLog:
    """The erasure records of one ledger database, in order."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql
        self.table = sql.table("erasures")
        self.positions = sql.table("erasure_positions")
        self._postgres = sql.database.kind == "postgresql"
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " erasure_id TEXT PRIMARY KEY, kind TEXT NOT NULL, erased_at TEXT NOT NULL,"
            " actor TEXT NOT NULL, reason TEXT NOT NULL, keys INTEGER NOT NULL,"
            " lessons INTEGER NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.positions} ("
            " position BIGINT PRIMARY KEY, erasure_id TEXT NOT NULL UNIQUE)",
        )

    def record(self, erasure: Erasure) -> None:
        """Keep the record, placed after every other."""
        with self.sql.transaction() as cursor:
            self.recording(cursor, erasure)

    def recording(self, cursor: Cursor, erasure: Erasure) -> None:
        """Within a transaction (the erasure's own): keep the record, placed after every
        other."""
        self._placing(cursor)
        cursor.run(
            f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                erasure.erasure_id,
                erasure.kind,
                erasure.erased_at.isoformat(),
                erasure.actor,
                erasure.reason,
                erasure.keys,
                erasure.lessons,
            ),
        )
        cursor.run(
            f"INSERT INTO {self.positions} (position, erasure_id)"
            f" SELECT COALESCE(MAX(position), 0) + 1, %s FROM {self.positions}",
            (erasure.erasure_id,),
        )

    def place(self) -> None:
        """Place the records an earlier release kept without a position."""
        with self.sql.transaction() as cursor:
            self._placing(cursor)

    def count(self) -> int:
        return int(self.sql.run(f"SELECT count(*) FROM {self.table}")[0][0])

    def records(self) -> list[Erasure]:
        """Every erasure, in the order recorded."""
        return [
            Erasure(
                str(row["erasure_id"]),
                cast(ErasureKind, row["kind"]),
                datetime.fromisoformat(str(row["erased_at"])),
                str(row["actor"]),
                str(row["reason"]),
                cast(int, row["keys"]),
                cast(int, row["lessons"]),
            )
            for row in self.covered()
        ]

    def covered(self) -> list[dict[str, object]]:
        """Every record as stored, with its position, in order: what a checkpoint's
        digest is made of."""
        columns = ", ".join(f"e.{name}" for name in COLUMNS)
        rows = self.sql.run(
            f"SELECT p.position, {columns} FROM {self.table} e"
            f" LEFT JOIN {self.positions} p ON p.erasure_id = e.erasure_id"
            " ORDER BY p.position IS NULL, p.position, e.erased_at, e.erasure_id"
        )
        names = ("position", *COLUMNS)
        return [
            {name: _plain(value) for name, value in zip(names, row, strict=True)} for row in rows
        ]

    def _placing(self, cursor: Cursor) -> None:
        """Inside a writer's transaction: take the log's lock, then place any record
        without a position (in the order of their times)."""
        if self._postgres:
            cursor.run("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.positions,))
        cursor.run(
            f"INSERT INTO {self.positions} (position, erasure_id)"
            f" SELECT (SELECT COALESCE(MAX(position), 0) FROM {self.positions})"
            "  + ROW_NUMBER() OVER (ORDER BY e.erased_at, e.erasure_id), e.erasure_id"
            f" FROM {self.table} e WHERE NOT EXISTS"
            f" (SELECT 1 FROM {self.positions} p WHERE p.erasure_id = e.erasure_id)"
        )


def _plain(value: object) -> object:
    """A stored value as JSON holds it: an integer, text, or None (no position yet)."""
    if value is None or isinstance(value, int):
        return value
    return str(value)
