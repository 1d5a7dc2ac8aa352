"""The keys' directory (decision records 0055, 0062): a process that hears of erasures
also holds every stored key, unwrapped as it is read, so a student it meets for the
first time costs no look-up; an erasure heard of empties it until it is read again, and
a read that an erasure overtook is not kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from psycopg import sql

from adapters.keys import data_keys
from adapters.keys.data_keys import DataKeys
from adapters.keys.sealing import sealer_of
from adapters.keys.wrapping import KeyEncryptionKeyError, Wrapping
from adapters.storage.sqlstore import SqlStore
from domain import LessonLedger
from tests.adapters.postgres.test_key_erasures import listening
from tests.support.projections import wait_until
from tests.support.stores import Store
from tests.support.student_data import parts, request

LOOK_UP = "WHERE owner IN"
"""What the statements that look keys up by owner say."""
LOOK_UP_BY_ID = "WHERE key_id = %s"
"""What the statement that looks a key up by its id says (to open what it sealed)."""


def holds_every_key(store: Store, keys: DataKeys) -> bool:
    """Whether a process's directory holds every key stored (none beside another here)."""
    return bool(keys.directory_size == store.query(f"SELECT count(*) FROM {keys.table}")[0][0])


class Statements:
    """The keys' statements, run on their real store and kept for the test to count;
    with `hold_reads`, a read of the directory waits until `release` is set."""

    def __init__(self, keys: DataKeys, *, hold_reads: bool = False) -> None:
        self.store: SqlStore = keys.sql
        self.seen: list[str] = []
        self.hold_reads = hold_reads
        self.release = threading.Event()
        keys.sql = self  # type: ignore[assignment]

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.seen.append(statement)
        if self.hold_reads and LOOK_UP not in statement and "LIMIT" in statement:
            assert self.release.wait(10), "the held read was never released"
        return self.store.run(statement, params)

    def look_ups(self, says: str = LOOK_UP) -> int:
        return sum(says in statement for statement in self.seen)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_student_met_for_the_first_time_is_sealed_without_a_look_up(
    postgres_store: Store,
) -> None:
    """Another process made Ada's key (and the month's date keys) before this one
    started: this process seals her part from its directory, with no statement, and
    reads it back. Ben's key is made elsewhere after the directory was read: once its
    making is heard of, he costs no look-up either, and is sealed under that same key."""
    theirs = postgres_store.open()
    request(theirs, "08:00-08:30", "ada")
    ours = postgres_store.open()
    keys = listening(ours)
    held = keys.directory_size
    assert held is not None
    statements = Statements(keys)

    lesson = request(ours, "08:30-09:00", "ada")
    assert statements.look_ups() == 0
    assert parts(ours, lesson) == ["student-ada"]

    ben = sealer_of(theirs).keys.key_for(sealer_of(ours).student_owner("student-ben"))
    wait_until(lambda: keys.directory_size == held + 1, 10, "Ben's key to be heard of")
    lesson = request(ours, "09:00-09:30", "ben")
    assert statements.look_ups() == 0
    assert parts(ours, lesson) == ["student-ben"]
    assert keys.key_for(sealer_of(ours).student_owner("student-ben")).key_id == ben.key_id


def test_every_key_a_batch_makes_reaches_the_directory_and_nothing_of_a_student(
    postgres_store: Store,
) -> None:
    """Another process makes 250 students' keys at once: each is heard of (two
    notifications, each under PostgreSQL's 8,000 bytes) and unwrapped here with no
    look-up. What is announced is the keys' ids, nothing of a student or a key."""
    theirs, ours = postgres_store.open(), postgres_store.open()
    keys = listening(ours)
    held = keys.directory_size
    assert held is not None
    students = [f"student-{n:03}" for n in range(250)]
    owners = [sealer_of(ours).student_owner(student) for student in students]

    with postgres_store.database.connect() as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(str(keys.made_channel))))
        made = sealer_of(theirs).keys.keys_for(owners)
        announced = [n.payload for n in conn.notifies(timeout=1, stop_after=2)]

    wait_until(lambda: keys.directory_size == held + 250, 10, "every key to be heard of")
    statements = Statements(keys)
    assert {o: k.key_id for o, k in keys.keys_for(owners).items()} == {
        o: k.key_id for o, k in made.items()
    }
    assert statements.look_ups() == 0
    assert len(announced) == 2
    assert sorted("\n".join(announced).split()) == sorted(k.key_id for k in made.values())


@pytest.mark.parametrize("read_again", [False, True], ids=["as-read", "read-again-meanwhile"])
def test_a_key_destroyed_here_is_not_brought_back_by_news_of_its_making(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch, read_again: bool
) -> None:
    """The listener lags: news of a key's making may come after this process destroyed
    it, also after the directory's periodic read. The news is read from the key table,
    where the key is no more: opening by its id finds nothing."""
    ledger, keys = _told_by_hand(postgres_store, monkeypatch)
    owner = sealer_of(ledger).student_owner("student-ada")
    with postgres_store.database.connect() as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(str(keys.made_channel))))
        key_id = keys.key_for(owner).key_id
        news = next(conn.notifies(timeout=5, stop_after=1)).payload
    assert keys.destroy([owner]) == [key_id]
    if read_again:
        assert keys.read_directory()

    keys.made(news)

    assert keys.key(key_id) is None


@pytest.mark.parametrize("made", ["before-the-read", "after-the-read"])
def test_a_lesson_of_students_never_met_is_opened_without_a_look_up(
    postgres_store: Store, made: str
) -> None:
    """Another process requested Ada's lesson, before this one started or after it read
    its directory (as the generation worker meets every new student): this process
    opens it (her part sealed under her key and the day's) from its directory, with no
    statement."""
    theirs = postgres_store.open()
    early = request(theirs, "08:00-08:30", "ada") if made == "before-the-read" else None
    ours = postgres_store.open()
    keys = listening(ours)
    lesson = early or request(theirs, "08:00-08:30", "ada")
    stored = postgres_store.query(f"SELECT count(*) FROM {keys.table}")[0][0]
    wait_until(lambda: keys.directory_size == stored, 10, "every key made to be heard of")
    statements = Statements(keys)

    assert parts(ours, lesson) == ["student-ada"]
    assert statements.look_ups(LOOK_UP_BY_ID) == 0


def test_a_key_destroyed_here_is_not_opened_from_the_directory(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between an erasure made in this process and its announcement coming back, the
    directory still holds the other keys, not the destroyed one: opening by its id finds
    nothing, also once nothing about it is remembered."""
    ledger = postgres_store.open()
    request(ledger, "08:00-08:30", "ada")
    owner = sealer_of(ledger).student_owner("student-ada")
    mine = sealer_of(ledger).keys
    keys = DataKeys(mine.sql, mine.kek)  # no listener: told by hand, and nothing heard
    keys.told(True)
    assert keys.read_directory()
    key_id = keys.key_for(owner).key_id
    monkeypatch.setattr(data_keys, "TOLD_CACHE_SECONDS", 0.0)  # nothing stays remembered

    assert keys.destroy([owner]) == [key_id]

    assert keys.key(key_id) is None
    assert keys.directory_size is not None and keys.directory_size > 0


def test_an_erasure_heard_of_empties_the_directory_until_it_is_read_again(
    postgres_store: Store,
) -> None:
    """This process never met Ada, but its directory holds her key. Another process
    erases her: once heard of, the directory holds nothing (its next read held back),
    so her next lesson is sealed under a new key; read again, it holds one key less, and
    opens nothing with the destroyed one."""
    theirs = postgres_store.open()
    request(theirs, "08:00-08:30", "ada")
    ours = postgres_store.open()
    keys = listening(ours)
    held = keys.directory_size
    owner = sealer_of(ours).student_owner("student-ada")
    statements = Statements(keys, hold_reads=True)

    destroyed = sealer_of(theirs).keys.destroy([owner])

    wait_until(lambda: keys.directory_size is None, 10, "the erasure to be heard of")
    assert keys.key_for(owner).key_id not in destroyed
    statements.release.set()
    wait_until(lambda: keys.directory_size == held, 10, "the directory to be read again")
    # One key less (Ada's), one more (her new one): the read took the keys it found
    # still stored from the directory dropped, never the destroyed one.
    assert keys.key(destroyed[0]) is None


class ErasedDuringTheRead(Statements):
    """The directory's first read returns only after another ledger has destroyed one of
    the keys it read and this process has heard of it."""

    def __init__(self, keys: DataKeys, theirs: DataKeys, owner: str) -> None:
        super().__init__(keys)
        self.theirs, self.owner = theirs, owner
        self.heard = threading.Event()
        self.armed = True
        hear = keys.heard

        def heard() -> None:
            hear()
            self.heard.set()

        keys.heard = heard  # type: ignore[method-assign]

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = super().run(statement, params)
        if self.armed and "LIMIT" in statement:
            self.armed = False
            assert self.owner in [row[0] for row in rows]
            assert self.theirs.destroy([self.owner])
            assert self.heard.wait(10), "the erasure was not heard of"
        return rows


def test_a_directory_read_before_an_erasure_is_not_kept(postgres_store: Store) -> None:
    """A read of the directory that an erasure overtook (it holds the destroyed key) is
    dropped: the student's next lesson is sealed under a new key."""
    theirs = postgres_store.open()
    request(theirs, "08:00-08:30", "ada")
    ours = postgres_store.open()
    keys = listening(ours)
    owner = sealer_of(ours).student_owner("student-ada")
    destroyed = keys.key_for(owner).key_id
    keys.forget([owner], [])
    keys.sql = ErasedDuringTheRead(keys, sealer_of(theirs).keys, owner)  # type: ignore[assignment]

    assert keys.read_directory() is False
    assert keys.key_for(owner).key_id != destroyed


def test_a_database_with_more_keys_than_the_directory_holds_has_none(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond DIRECTORY_KEYS the directory holds nothing (memory's sake): keys are looked
    up as without it, and still found."""
    ours = postgres_store.open()
    keys = listening(ours)
    request(ours, "08:00-08:30", "ada", "ben")
    monkeypatch.setattr(data_keys, "DIRECTORY_KEYS", 2)

    assert keys.read_directory() is False
    assert keys.directory_size is None
    keys.forget([sealer_of(ours).student_owner("student-ada")], [])
    statements = Statements(keys)
    lesson = request(ours, "08:30-09:00", "ada")
    assert statements.look_ups() == 1
    assert parts(ours, lesson) == ["student-ada"]


MAKE = "INSERT INTO"
"""What the statement that makes keys says."""


def test_a_key_missing_from_the_directory_is_found_not_made_again(
    postgres_store: Store,
) -> None:
    """A key the directory lacks (its news not heard of yet, or a read that began
    before it was made): making it first finds it made, and the stored key is used."""
    theirs, ours = postgres_store.open(), postgres_store.open()
    keys = listening(ours)
    owner = sealer_of(ours).student_owner("student-ada")
    made = sealer_of(theirs).keys.key_for(owner)
    wait_until(lambda: keys.key_for(owner).key_id == made.key_id, 10, "Ada's key heard of")
    keys.forget([owner], [])  # as if never heard of
    statements = Statements(keys)

    assert keys.key_for(owner).key_id == made.key_id
    assert statements.look_ups(MAKE) == 1 and statements.look_ups() == 1


def test_a_directory_without_room_for_every_key_looks_keys_up_first(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """News of a key made elsewhere comes when the directory is full: it may lack keys
    that exist, so a student not in it is looked up before a key is made."""
    theirs = postgres_store.open()
    request(theirs, "08:00-08:30", "ben")  # the month's date keys, made
    ours = postgres_store.open()
    keys = listening(ours)
    held = keys.directory_size
    monkeypatch.setattr(data_keys, "DIRECTORY_KEYS", held)
    sealer_of(theirs).keys.key_for(sealer_of(theirs).student_owner("student-ada"))
    statements = Statements(keys)
    wait_until(lambda: not keys.makes_first, 10, "Ada's key to be refused room")

    request(ours, "08:30-09:00", "ada")

    assert statements.look_ups() == 1
    assert keys.directory_size == held


def test_news_sent_again_by_anyone_does_not_bring_an_erased_key_back(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone connected may NOTIFY: a session that kept the news of Ada's key sends it
    again after her erasure. The listening process reads the key table, not the news,
    and her key stays gone."""
    theirs, ours = postgres_store.open(), postgres_store.open()
    keys = listening(ours)
    monkeypatch.setattr(data_keys, "TOLD_CACHE_SECONDS", 0.0)  # nothing stays remembered
    owner = sealer_of(ours).student_owner("student-ada")
    channel = sql.Identifier(str(keys.made_channel))
    with postgres_store.database.connect() as conn:
        conn.execute(sql.SQL("LISTEN {}").format(channel))
        destroyed = sealer_of(theirs).keys.key_for(owner).key_id
        news = next(conn.notifies(timeout=5, stop_after=1)).payload
    assert sealer_of(theirs).keys.destroy([owner]) == [destroyed]
    stored = postgres_store.query(f"SELECT count(*) FROM {keys.table}")[0][0]
    assert isinstance(stored, int)
    # One key less than before the erasure: it was heard of, and the directory read again.
    wait_until(lambda: keys.directory_size == stored, 10, "the directory to be read again")

    with postgres_store.database.connect() as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (keys.made_channel, news))
    sealer_of(theirs).keys.key_for("student:later")  # its news comes after the replay
    wait_until(lambda: keys.directory_size == stored + 1, 10, "the later news to be heard of")

    assert keys.key(destroyed) is None


class DestroyedDuringTheRead(Statements):
    """The read of a key's news returns only after this process destroyed that key."""

    def __init__(self, keys: DataKeys, owner: str) -> None:
        super().__init__(keys)
        self.keys, self.owner = keys, owner

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = super().run(statement, params)
        if "= ANY" in statement:
            assert rows and self.keys.destroy([self.owner])
        return rows


def test_news_read_before_an_erasure_here_is_not_kept(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The news of Ada's key is read from the table just before this process erases
    her: what was read is not added to the directory."""
    ledger, keys = _told_by_hand(postgres_store, monkeypatch)
    owner = sealer_of(ledger).student_owner("student-ada")
    key_id = sealer_of(ledger).keys.key_for(owner).key_id  # the ledger's: not heard here
    keys.sql = DestroyedDuringTheRead(keys, owner)  # type: ignore[assignment]

    keys.made(key_id)

    assert keys.key(key_id) is None


def _told_by_hand(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[LessonLedger, DataKeys]:
    """A ledger, and keys of its database with no listener (told and given news by
    hand), whose directory was read and which remember nothing."""
    ledger = store.open()
    mine = sealer_of(ledger).keys
    keys = DataKeys(mine.sql, mine.kek)
    keys.told(True)
    assert keys.read_directory()
    monkeypatch.setattr(data_keys, "TOLD_CACHE_SECONDS", 0.0)
    return ledger, keys


def test_a_key_the_key_encryption_key_does_not_open_is_left_out_of_the_directory(
    postgres_store: Store,
) -> None:
    """The directory's keys are unwrapped as they are read. A stored key that does not
    open (wrapped by a key-encryption key this process never had) is left out: the read
    keeps every other key, and asking for that one is refused in one line, as without a
    directory."""
    ledger = postgres_store.open()
    request(ledger, "08:00-08:30", "ada")
    keys = listening(ledger)
    wait_until(lambda: holds_every_key(postgres_store, keys), 10, "Ada's key to be heard of")
    wrapped, kek_id = Wrapping(bytes(range(32))).wrap("not-ours", bytes(32))
    keys.sql.run(
        f"INSERT INTO {keys.table} (key_id, owner, wrapped, kek_id, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        ("not-ours", "student:not-ours", wrapped, kek_id, "2026-12-04T00:00:00+00:00"),
    )
    held = keys.directory_size
    keys.heard()  # as after an erasure: the directory is read again

    assert keys.read_directory()
    assert keys.directory_size == held  # every key but the stranger's
    statements = Statements(keys)
    assert parts(ledger, request(ledger, "08:30-09:00", "ada")) == ["student-ada"]
    assert statements.seen == []
    with pytest.raises(KeyEncryptionKeyError, match="does not open") as refused:
        keys.key_for("student:not-ours")
    assert "\n" not in str(refused.value)
