"""The append that stores new students' keys with the events sealed under them
(adapters/postgres/writes.py, decision records 0064 and 0068): one event or several, the
keys stored as their owners' in the events' own transaction; a key whose owner has one
already is stored beside it, and the events once; events refused (their version taken)
store no key. Through prepared statements, and through a pooler's unnamed ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from adapters.keys.sealing import sealer_of
from adapters.keys.unsaved import BESIDE
from adapters.postgres.schema import EventsTable
from adapters.postgres.writes import PreparedAppend
from adapters.storage.database import APPLICATION_NAME
from tests.support.stores import POSTGRES_URL, Store

Row = tuple[str, str, str, str]


class Made:
    """Keys made for the next append (`KeysWithEvents`)."""

    def __init__(self, table: str, rows: list[Row]) -> None:
        self.table = table
        self._rows = rows

    def rows(self) -> list[Row]:
        return self._rows

    def stored(self) -> None:
        """Called by the recorder once its append committed; not by the append."""


@pytest.fixture(name="keys_table")
def keys_table_fixture(postgres_store: Store) -> str:
    """The key table of a fresh ledger's schema, as statements spell it."""
    return sealer_of(postgres_store.open()).keys.table


@pytest.fixture(name="conn")
def conn_fixture() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        yield conn


def appends(store: Store, *, pooled: bool) -> PreparedAppend:
    table = EventsTable(store.database.schema, f"{APPLICATION_NAME.lower()}_events", "uuid")
    return PreparedAppend(table, pooled=pooled, lock_timeout=5 if pooled else 0)


def events(count: int) -> list[StoredEvent]:
    return [
        StoredEvent(uuid.uuid4(), 1, "tests.Opened", f"state {n}".encode()) for n in range(count)
    ]


def key_rows(owners: list[str]) -> list[Row]:
    """New keys' rows, as a sealer makes them: (key id, owner, wrapped, kek id)."""
    return [(uuid.uuid4().hex, owner, f"wrapped-{owner}", "kek-1") for owner in owners]


def stored_keys(store: Store, table: str) -> dict[str, tuple[str, str]]:
    """The key table's rows but the ledger's own check key: key id -> (owner, xmin)."""
    rows = store.query(f"SELECT key_id, owner, xmin::text FROM {table} WHERE owner LIKE 't%%'")
    return {str(key_id): (str(owner), str(xmin)) for key_id, owner, xmin in rows}


def event_txs(store: Store, appended: list[StoredEvent]) -> list[str]:
    """Each event's transaction id, as a row's xmin shows it (its low 32 bits)."""
    rows = store.query(
        f"SELECT (tx::text::bigint %% 4294967296)::text FROM {store.database.events_table}"
        " WHERE originator_id = ANY(%s) ORDER BY notification_id",
        ([event.originator_id for event in appended],),
    )
    return [str(row[0]) for row in rows]


@pytest.mark.parametrize("pooled", [False, True], ids=["prepared", "pooler"])
@pytest.mark.parametrize("count", [1, 3], ids=["one event", "three events"])
def test_keys_are_stored_in_the_transaction_of_their_events(
    postgres_store: Store,
    keys_table: str,
    conn: psycopg.Connection[tuple[object, ...]],
    pooled: bool,
    count: int,
) -> None:
    appended, made = events(count), key_rows(["t-ada", "t-ben"])

    ids = appends(postgres_store, pooled=pooled).send(conn, appended, Made(keys_table, made))

    assert len(ids) == count and ids == sorted(ids)
    [tx] = set(event_txs(postgres_store, appended))
    assert stored_keys(postgres_store, keys_table) == {
        key_id: (owner, tx) for key_id, owner, _, _ in made
    }


@pytest.mark.parametrize("pooled", [False, True], ids=["prepared", "pooler"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["own", "caller's transaction"])
def test_a_key_whose_owner_has_one_is_stored_beside_it_and_the_events_once(
    postgres_store: Store, keys_table: str, pooled: bool, autocommit: bool
) -> None:
    """Another process stored Ada's key a moment before: this append stores its own
    beside hers, Ben's as his, and each event once."""
    [(theirs, _, wrapped, kek)] = key_rows(["t-ada"])
    postgres_store.execute(
        f"INSERT INTO {keys_table} (key_id, owner, wrapped, kek_id, created_at)"
        " VALUES (%s, 't-ada', %s, %s, 'then')",
        (theirs, wrapped, kek),
    )
    appended, made = events(2), key_rows(["t-ada", "t-ben"])
    (ours, _, _, _), (bens, _, _, _) = made

    with psycopg.connect(POSTGRES_URL, autocommit=autocommit) as conn:
        ids = appends(postgres_store, pooled=pooled).send(conn, appended, Made(keys_table, made))
        conn.commit()

    assert len(ids) == 2
    txs = event_txs(postgres_store, appended)
    assert len(txs) == 2 and len(set(txs)) == 1
    stored = stored_keys(postgres_store, keys_table)
    assert {key_id: owner for key_id, (owner, _) in stored.items()} == {
        theirs: "t-ada",
        ours: f"t-ada{BESIDE}{ours}",
        bens: "t-ben",
    }
    assert stored[ours][1] == stored[bens][1] == txs[0]


@pytest.mark.parametrize("pooled", [False, True], ids=["prepared", "pooler"])
def test_events_refused_store_none_of_their_keys(
    postgres_store: Store,
    keys_table: str,
    conn: psycopg.Connection[tuple[object, ...]],
    pooled: bool,
) -> None:
    """Their version taken (another writer's request for the slot committed first): the
    refusal is the events' own, not taken for a key stored meanwhile, and no key stays."""
    append = appends(postgres_store, pooled=pooled)
    appended = events(1)
    append.send(conn, appended)

    with pytest.raises(psycopg.errors.UniqueViolation) as refused:
        append.send(conn, appended, Made(keys_table, key_rows(["t-ada"])))

    assert refused.value.diag.table_name == f"{APPLICATION_NAME.lower()}_events"
    assert stored_keys(postgres_store, keys_table) == {}
    assert len(event_txs(postgres_store, appended)) == 1
