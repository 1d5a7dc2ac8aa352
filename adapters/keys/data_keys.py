"""Data keys: one random AES-256 key per owner (a student, a lesson date), kept in the
ledger's database (`data_keys`) wrapped by the key-encryption key, which never is
(adapters/keys/wrapping.py).

Destroying an owner's key is how its data is erased: whatever was sealed under it can no
longer be opened, by anyone, with any key that remains. Unwrapped keys are remembered by
each process: for `cache_seconds` (5 s), so that a key destroyed by another process stops
opening data there within that time; or, while a listener hears every destruction
announced on PostgreSQL (`channel`, adapters/postgres/key_erasures.py), or where no
session can listen a poller reads every destruction's count (adapters/keys/destructions.py),
for `TOLD_CACHE_SECONDS`, dropped as soon as one is heard (decision records 0054, 0067). While it
listens, the process also holds the table's keys, unwrapped as they are read (its
directory, up to `DIRECTORY_KEYS`, by owner and by id), read again after every erasure
heard of: a student it meets for the first time, or an event it opens of one, costs a
look in memory, not a round trip (decision records 0055, 0062). Keys made are announced too
(`made_channel`, their ids), and read into the directory, so it holds the keys made
since it was read (decision record 0057).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.forking import in_forked_children
from adapters.keys.announcing import MADE_PER_NOTICE, Announcer
from adapters.keys.data_key import DataKey, UnsavedKey
from adapters.keys.destructions import TABLE as DESTRUCTIONS
from adapters.keys.destructions import counting, created
from adapters.keys.unsaved import BESIDE, UnsavedKeys
from adapters.keys.wrapping import KEY_BYTES, KeyEncryptionKeyError, KeyFileKeys, Wrapping
from adapters.storage.sqlstore import Cursor, SqlStore

_OWNERS_PER_STATEMENT = 190
"""Owners named in one statement (five parameters each: older SQLite builds take 999)."""
TOLD_CACHE_SECONDS = 600.0
"""How long keys are remembered while every erasure is heard of (memory's sake alone)."""
DIRECTORY_KEYS = 50_000
"""At most this many keys held in the directory (about 20 MB); a database with more has
none."""
_CHECK_OWNER = "kek-check"
"""A key of no data, kept so that a wrong key-encryption key is noticed at start."""


@dataclass
class _Directory:
    """Every stored key, as read while erasures were heard of: by owner and by id."""

    by_owner: dict[str, DataKey]
    by_id: dict[str, DataKey]
    complete: bool = True
    """Whether it holds every key made since the read too (none refused for room)."""

    @classmethod
    def of(cls, keys: Iterable[DataKey]) -> _Directory:
        """Holding these keys."""
        directory = cls({}, {})
        directory.add(keys)
        return directory

    def add(self, keys: Iterable[DataKey]) -> None:
        """These keys too: as read, or made since."""
        for key in keys:
            if len(self.by_id) >= DIRECTORY_KEYS:
                self.complete = False
                continue
            if BESIDE not in key.owner:  # one stored beside the owner's is found by id
                self.by_owner[key.owner] = key
            self.by_id[key.key_id] = key


class DataKeys:
    """The data keys of one database, wrapped by `kek`."""

    def __init__(
        self,
        sql: SqlStore,
        kek: bytes,
        cache_seconds: float = 5.0,
        *,
        previous: bytes | None = None,
        reread: KeyFileKeys | None = None,
    ) -> None:
        """`previous`: the key-encryption key before the last rotation, which keys made by
        a process that had not heard of it are wrapped by; `reread`: the current and
        previous ones as the key file holds them now (after a rotation elsewhere)."""
        self.sql = sql
        self._postgres = sql.database.kind == "postgresql"
        self.table = sql.table("data_keys")
        self.destructions_table = sql.table(DESTRUCTIONS)
        self.wrapping = Wrapping(kek, previous, reread)
        self.cache_seconds = cache_seconds
        self.channel = f"{sql.database.schema}_data_keys" if self._postgres else None
        """Where destroying keys is announced (PostgreSQL)."""
        self.made_channel = f"{self.channel}_made" if self.channel else None
        """Where making keys is announced, their ids (PostgreSQL)."""
        self._told = False
        """Whether a listener hears every announcement now."""
        self._generation = 0
        """Counts what was forgotten: a key read before must not be remembered after."""
        self._by_owner: dict[str, tuple[float, DataKey]] = {}
        self._by_id: dict[str, tuple[float, DataKey | None]] = {}
        self._directory: _Directory | None = None
        self._dropped: dict[str, DataKey] = {}
        """The keys of the directory last dropped, by id: never used to seal or open, only
        to spare the next read unwrapping again those it finds still stored."""
        self._lock = threading.Lock()
        self.unsaved = (
            None
            if self.made_channel is None
            else UnsavedKeys(self.table, self._remember_stored, Announcer(sql, self.made_channel))
        )
        """Keys made for this thread's next append to store (PostgreSQL)."""
        in_forked_children(self._forget_parents)
        sql.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " key_id TEXT PRIMARY KEY, owner TEXT NOT NULL UNIQUE, wrapped TEXT NOT NULL,"
            " kek_id TEXT NOT NULL, created_at TEXT NOT NULL)",
            created(self.destructions_table),
        )
        self.check()

    def close(self) -> None:
        """Announce keys stored by appends and not announced yet; free the connections."""
        if self.unsaved is not None:
            self.unsaved.close()
        self.sql.close()

    def check(self) -> None:
        """Raise KeyEncryptionKeyError, one line, unless the key-encryption key opens this
        database's keys (a new database: the key it starts with)."""
        found = self.sql.run(
            f"SELECT key_id, wrapped, kek_id FROM {self.table} WHERE owner = %s", (_CHECK_OWNER,)
        )
        if not found:
            self.key_for(_CHECK_OWNER)
            return
        key_id, wrapped, kek_id = found[0]
        try:
            self.wrapping.unwrap(key_id, wrapped)
        except KeyEncryptionKeyError:
            raise KeyEncryptionKeyError(
                f"the key-encryption key ({self.kek_id}) does not open this database's data "
                f"keys (they were wrapped by {kek_id}): check LESSON_LEDGER_KEY_FILE or "
                "LESSON_LEDGER_KEY_ENCRYPTION_KEY"
            ) from None

    def key_for(self, owner: str) -> DataKey:
        """The owner's key, made (and stored) on first use."""
        return self.keys_for((owner,))[owner]

    def keys_for(self, owners: Iterable[str], *, unsaved: bool = False) -> dict[str, DataKey]:
        """Each owner's key, made (and stored) on first use: those not remembered are
        taken from the directory, or else looked up together, and those missing made
        together (a batch's dozens of students and dates cost a round trip or three, not
        three each). `unsaved`: keys made first (`makes_first`) are not stored here but
        held for this thread's next append to store (`unsaved`, decision record 0064)."""
        now, generation = time.monotonic(), self._generation
        found: dict[str, DataKey] = {}
        stored: dict[str, DataKey] = {}
        unknown: list[str] = []
        for owner in owners:
            cached = self._by_owner.get(owner)
            if cached is not None and cached[0] > now:
                found[owner] = cached[1]
            else:
                unknown.append(owner)
        if unknown:
            unknown = list(dict.fromkeys(unknown))  # each once
            # Held by the directory as long as it is: no need to remember them too.
            found.update(self._known(unknown))
            unknown = [owner for owner in unknown if owner not in found]
        holds = self.unsaved if unsaved else None
        held: list[UnsavedKey] = []
        if unknown and self.makes_first and holds is not None:
            held = self._made(unknown)
            found.update((made.key.owner, made.key) for made in held)
        elif unknown and self.makes_first:
            # The directory holds every key but those made a moment ago: an owner not in
            # it most likely has none yet. Made first, it costs one round trip, not two.
            stored.update(self._created(unknown))
        elif unknown:
            stored.update(self._stored(unknown))
            missing = [owner for owner in unknown if owner not in stored]
            if missing:
                stored.update(self._created(missing))
        if holds is not None:
            holds.hold(held, generation)
        if stored:
            self._remember(stored.values(), now, generation)
            found.update(stored)
        return found

    @property
    def generation(self) -> int:
        """Counts what was forgotten (a destruction, heard of or made here; a listener's
        start or end): a key found before a change of it may be destroyed."""
        return self._generation

    @property
    def makes_first(self) -> bool:
        """Whether keys not in the directory are made before they are looked up: while it
        holds every stored key, as heard of (PostgreSQL)."""
        directory = self._directory
        return directory is not None and directory.complete and self.made_channel is not None

    def key(self, key_id: str) -> DataKey | None:
        """The key with this id, or None once it was destroyed."""
        now, generation = time.monotonic(), self._generation
        cached = self._by_id.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        directory = self._directory
        key = None if directory is None else directory.by_id.get(key_id)
        if key is not None:
            return key
        rows = self.sql.run(
            f"SELECT owner, key_id, wrapped FROM {self.table} WHERE key_id = %s", (key_id,)
        )
        key = self._opened_row(*rows[0]) if rows else None
        with self._lock:
            if generation == self._generation:
                self._by_id[key_id] = (self._until(now), key)
        return key

    def destroy(self, owners: list[str]) -> list[str]:
        """Destroy these owners' keys; the ids of those that existed."""
        with self.sql.transaction() as cursor:
            destroyed = self.destroying(cursor, owners)
        self.forget(owners, destroyed)
        return destroyed

    def destroying(self, cursor: Cursor, owners: list[str], *, beside: bool = True) -> list[str]:
        """Within a transaction: delete these owners' keys, announced as it commits; the
        ids of those that existed. `forget` them once it has committed. `beside`: those
        stored beside theirs too (adapters/keys/unsaved.py; PostgreSQL alone has them, and
        only for owners whose keys appends store: a student's, never a day's)."""
        destroyed: list[str] = []
        for owner in owners:
            rows = cursor.run(
                f"DELETE FROM {self.table} WHERE owner = %s RETURNING key_id", (owner,)
            )
            destroyed += [row[0] for row in rows]
        if beside and self.unsaved is not None and owners:
            # No index finds them (the owner's name begins theirs): one scan for all.
            rows = cursor.run(
                f"DELETE FROM {self.table} WHERE strpos(owner, %s) > 0"
                f" AND split_part(owner, %s, 1) = ANY(%s) RETURNING key_id",
                (BESIDE, BESIDE, owners),
            )
            destroyed += [row[0] for row in rows]
        if destroyed:
            counting(cursor, self.destructions_table)  # what processes that cannot listen read
        if destroyed and self.channel is not None:
            # Delivered at commit, to every process listening (a pooler passes it on).
            cursor.run("SELECT pg_notify(%s, '')", (self.channel,))
        return destroyed

    def owners(self, prefix: str) -> Iterator[str]:
        """Every owner whose name starts with `prefix` (e.g. every lesson date's)."""
        rows = self.sql.run(
            f"SELECT owner FROM {self.table} WHERE owner LIKE %s ORDER BY owner", (prefix + "%",)
        )
        for (owner,) in rows:
            yield owner

    def rewrap(self, new_kek: bytes) -> int:
        """Wrap every key with a new key-encryption key instead (no data changes); how many.
        This process wraps with it from now on, and opens with the one before too."""
        new, wrapping = Wrapping(new_kek), self.wrapping
        with self.sql.transaction() as cursor:
            rows = cursor.run(f"SELECT key_id, wrapped FROM {self.table}")
            for key_id, wrapped in rows:
                cursor.run(
                    f"UPDATE {self.table} SET wrapped = %s, kek_id = %s WHERE key_id = %s",
                    (*new.wrap(key_id, wrapping.unwrap(key_id, wrapped)), key_id),
                )
        wrapping.use(new_kek, wrapping.kek if new_kek != wrapping.kek else wrapping.previous)
        return len(rows)

    @property
    def kek(self) -> bytes:
        """The key-encryption key that wraps keys made here."""
        return self.wrapping.kek

    @property
    def kek_id(self) -> str:
        return self.wrapping.kek_id

    @property
    def previous(self) -> bytes | None:
        """The key-encryption key before the last rotation (it still opens keys)."""
        return self.wrapping.previous

    def forget(self, owners: list[str], key_ids: list[str]) -> None:
        """Drop remembered keys (after destroying them)."""
        with self._lock:
            self._generation += 1
            directory = self._directory
            for owner in owners:
                self._by_owner.pop(owner, None)
                if directory is not None:
                    directory.by_owner.pop(owner, None)
            for key_id in key_ids:
                self._by_id[key_id] = (self._until(time.monotonic()), None)
                self._dropped.pop(key_id, None)
                if directory is not None:
                    directory.by_id.pop(key_id, None)

    @property
    def told_of_erasures(self) -> bool:
        """Whether every destruction announced elsewhere is heard of now."""
        return self._told

    def told(self, listening: bool) -> None:
        """Whether every destruction announced is heard of from now on (a listener has
        begun to LISTEN), or no longer (its connection failed). Either way every key
        remembered is dropped: one may have been destroyed unheard."""
        with self._lock:
            self._told = listening
            self._forget_all()

    def _forget_parents(self) -> None:
        """In a forked child: the parent's listener stays with the parent, so erasures go
        unheard here. Nothing inherited is trusted (the lock may have been held at the
        fork), and keys are remembered for the short cache, as without a listener."""
        self._lock = threading.Lock()
        self._told = False
        self._forget_all()

    def heard(self) -> None:
        """Another process destroyed keys: forget every key remembered (erasures are rare,
        and the announcement names none)."""
        with self._lock:
            self._forget_all()

    def made(self, announced: str) -> None:
        """Keys made here or elsewhere, as announced (their ids, a line each): read from
        the key table into the directory, which may have been read before they were.
        What is read, not what is announced, is kept: anyone connected may NOTIFY, and a
        key destroyed since (or an old announcement sent again) is not found."""
        generation = self._generation
        if self._directory is None:
            return
        rows = self.sql.run(
            f"SELECT owner, key_id, wrapped FROM {self.table} WHERE key_id = ANY(%s)",
            (announced.split(),),
        )
        keys = self._opened_rows(rows)
        with self._lock:
            # Not after a forgetting meanwhile: the read may have come before an erasure.
            if generation == self._generation and self._directory is not None:
                self._directory.add(keys)

    @property
    def directory_size(self) -> int | None:
        """How many keys the directory holds; None while it holds none."""
        directory = self._directory
        return None if directory is None else len(directory.by_owner)

    def read_directory(self) -> bool:
        """Read every stored key into the directory, unwrapped, while erasures are heard of
        (the reader: the listener's). Not kept if anything was forgotten meanwhile (an
        erasure heard of may have come after the read), nor beyond DIRECTORY_KEYS."""
        generation = self._generation
        if not self._told:
            return False
        held = self._dropped if self._directory is None else self._directory.by_id
        rows = self.sql.run(
            f"SELECT owner, key_id, wrapped FROM {self.table} LIMIT %s", (DIRECTORY_KEYS + 1,)
        )
        directory = None
        if len(rows) <= DIRECTORY_KEYS:
            # A key's bytes never change (a rotation rewraps them), and one this read finds
            # is not destroyed: those held before, the directory's or the one dropped at
            # an erasure, need no unwrap again (40,000 unwraps hold the GIL for 0.2 s).
            directory = _Directory.of(self._opened_rows(rows, held))
        with self._lock:
            if generation != self._generation or not self._told:
                return False
            self._directory, self._dropped = directory, {}
        return directory is not None

    def _known(self, owners: Sequence[str]) -> dict[str, DataKey]:
        """The keys of these owners that the directory holds."""
        directory = self._directory
        if directory is None:
            return {}
        return {owner: key for owner in owners if (key := directory.by_owner.get(owner))}

    def _opened_row(self, owner: str, key_id: str, wrapped: str) -> DataKey:
        """The key of a key table's row, unwrapped."""
        raw = self.wrapping.unwrap(key_id, wrapped)
        return DataKey(key_id, raw, AESGCM(raw), owner)

    def _opened_rows(
        self, rows: Iterable[Sequence[str]], held: Mapping[str, DataKey] = MappingProxyType({})
    ) -> list[DataKey]:
        """The keys of the key table's (owner, key id, wrapped) rows that the key-encryption
        keys open, taken from `held` (by id) where it has them. One that none opens is left
        out: asked for, it is looked up, and refused there with KeyEncryptionKeyError."""
        keys = []
        for owner, key_id, wrapped in rows:
            try:
                keys.append(held.get(key_id) or self._opened_row(owner, key_id, wrapped))
            except KeyEncryptionKeyError:
                continue
        return keys

    def _forget_all(self) -> None:
        self._generation += 1
        self._by_owner.clear()
        self._by_id.clear()
        if self._directory is not None:
            self._dropped = self._directory.by_id
        self._directory = None

    def _until(self, now: float) -> float:
        return now + (TOLD_CACHE_SECONDS if self._told else self.cache_seconds)

    def _remember(self, keys: Iterable[DataKey], now: float, generation: int) -> None:
        """Remember keys read at `generation`, unless something was forgotten since (the
        read may have come before a destruction heard of meanwhile)."""
        with self._lock:
            if generation != self._generation:
                return
            until = self._until(now)
            for key in keys:
                self._by_owner[key.owner] = (until, key)
                self._by_id[key.key_id] = (until, key)

    def _stored(self, owners: Sequence[str]) -> dict[str, DataKey]:
        """The stored keys of these owners, by owner."""
        keys: dict[str, DataKey] = {}
        for start in range(0, len(owners), _OWNERS_PER_STATEMENT):
            chunk = owners[start : start + _OWNERS_PER_STATEMENT]
            rows = self.sql.run(
                f"SELECT owner, key_id, wrapped FROM {self.table}"
                f" WHERE owner IN ({', '.join(['%s'] * len(chunk))})",
                chunk,
            )
            for owner, key_id, wrapped in rows:
                keys[owner] = self._opened_row(owner, key_id, wrapped)
        return keys

    def _created(self, owners: Sequence[str]) -> dict[str, DataKey]:
        """New keys for these owners; where another process made one first, that one."""
        created_at = datetime.now(UTC).isoformat()
        made: dict[str, DataKey] = {}
        # In one order everywhere: two writers making the same keys then wait for each
        # other on the owners' index, never in a circle (a deadlock).
        new = self._made(sorted(owners))
        for start in range(0, len(new), _OWNERS_PER_STATEMENT):
            chunk = new[start : start + _OWNERS_PER_STATEMENT]
            rows = [value for key in chunk for value in (*key.row, created_at)]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            insert = (
                f"INSERT INTO {self.table} (key_id, owner, wrapped, kek_id, created_at)"
                f" VALUES {values} ON CONFLICT (owner) DO NOTHING"
            )
            if self.made_channel is None:
                self.sql.run(insert, rows)
            else:
                inserted = self.sql.run(self._announced(insert), [*rows, self.made_channel])
                of = {key.key.owner: key.key for key in chunk}
                made.update((owner, of[owner]) for (owner,) in inserted)
        others = [owner for owner in owners if owner not in made]
        stored = {**self._stored(others), **made} if others else made
        assert len(stored) == len(owners), "a key was just made for each owner"
        return stored

    def _made(self, owners: Sequence[str]) -> list[UnsavedKey]:
        """A new key for each owner, wrapped for its row, not stored."""
        self.wrapping.follow_rotation()
        made = []
        for owner in owners:
            key_id, raw = uuid.uuid4().hex, AESGCM.generate_key(bit_length=KEY_BYTES * 8)
            wrapped, kek_id = self.wrapping.wrap(key_id, raw)
            made.append(UnsavedKey(DataKey(key_id, raw, AESGCM(raw), owner), wrapped, kek_id))
        return made

    def _remember_stored(self, keys: Sequence[DataKey], generation: int) -> None:
        """Remember keys an append stored, made at `generation`."""
        self._remember(keys, time.monotonic(), generation)

    @staticmethod
    def _announced(insert: str) -> str:
        """The INSERT, and a notification of the ids of the keys it made (those another
        process had not made first, which that one announces) in the same statement:
        delivered at its commit, after any erasure committed before it and before any
        after. It returns the owners of the keys it made."""
        return (
            f"WITH made AS ({insert} RETURNING owner, key_id),"
            " lines AS (SELECT owner, key_id,"
            f" (row_number() OVER ()) / {MADE_PER_NOTICE} AS notice FROM made),"
            " told AS (SELECT notice, pg_notify(%s, string_agg(key_id, chr(10)))"
            " FROM lines GROUP BY notice)"
            # Read from `told`, so that it runs (a CTE no one reads is not).
            " SELECT owner FROM lines WHERE notice IN (SELECT notice FROM told)"
        )

    def opens_only_with_previous(self) -> bool:
        """Whether the keys open with the previous key-encryption key but not with the
        current (a rotation interrupted before its rewrap)."""
        found = self.sql.run(
            f"SELECT key_id, wrapped FROM {self.table} WHERE owner = %s", (_CHECK_OWNER,)
        )
        if not found or self.previous is None:
            return False
        key_id, wrapped = found[0]
        return not self.wrapping.opens_with_current(key_id, wrapped)
