"""The recorder's writes: its write sessions, and a save sent through libpq.

`WriteSessions` hands out autocommit sessions of the recorder's own, last in first out;
`PreparedAppend` sends a save as one statement of binary parameters, encoded here;
`persistence_error` maps psycopg's errors to the library's. Why LIFO sessions and
libpq: docs/decisions/0001-postgres-recorder-without-table-lock.md.

On a direct connection the statement is prepared once per session (a named prepared
statement) and the session's `lock_timeout` is set once. Through a transaction pooler
nothing may outlive its transaction: the statement goes unnamed (parse, bind and execute
in one round trip) and sets `lock_timeout` for its own transaction
(docs/decisions/0030-transaction-poolers.md).
"""

from __future__ import annotations

import struct
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg
import psycopg.errors
import psycopg.generators
import psycopg.pq
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresDatastore
from psycopg.pq.abc import PGresult
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Literal

from adapters.forking import in_forked_children
from adapters.keys.unsaved import BESIDE
from adapters.postgres.schema import EventsTable

_BINARY4 = (1, 1, 1, 1)
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
_COMMAND_OK = psycopg.pq.ExecStatus.COMMAND_OK
_IDLE = psycopg.pq.TransactionStatus.IDLE
# One-dimensional, no NULLs: (ndim, has nulls, element type oid, length, lower bound).
_ARRAY_HEADER = struct.Struct("!iiiii")
_UUID_OID, _INT8_OID, _TEXT_OID, _BYTEA_OID = 2950, 20, 25, 17
_LENGTH_16 = struct.pack("!i", 16)
_INT8 = struct.Struct("!q")


class WriteSessions:
    """Autocommit sessions for appending, most recently used first; as many as threads
    write at once, at most the library pool's size (a writer beyond it waits). A closed
    (broken) session is dropped on return; a forked child starts with none.

    Taking an idle session and giving it back are a list's pop and append (atomic in
    CPython): a save pays no lock for them. Only opening one, or waiting, locks."""

    def __init__(self, datastore: PostgresDatastore, *, pooled: bool = False) -> None:
        self._datastore = datastore
        self._pooled = pooled
        self._idle: list[psycopg.Connection[Any]] = []
        self._open = 0
        self._waiting = 0
        self._limit = max(1, datastore.pool.max_size)
        self._changed = threading.Condition()
        self._closed = False
        in_forked_children(self._forget_parents)

    def take(self) -> psycopg.Connection[Any]:
        try:
            return self._idle.pop()
        except IndexError:
            pass
        with self._changed:
            while True:
                if self._closed:
                    raise InterfaceError("the recorder is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._limit:
                    self._open += 1
                    break
                self._waiting += 1
                self._changed.wait()
                self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            self._dropped()
            raise

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """A session for one autocommit write; psycopg's errors raised as the library's
        persistence errors, as from the library's own recorder."""
        conn = self.take()
        try:
            yield conn
        except BaseException as error:
            if not isinstance(error, psycopg.errors.IntegrityError):
                # It may have failed between taking and releasing the session's
                # advisory lock (a database error, or an interruption such as Ctrl-C,
                # which cancels the running statement): end the session, which releases
                # it for sure, rather than give it back holding the lock.
                conn.close()
            if isinstance(error, psycopg.Error):
                raise persistence_error(error) from error
            raise
        finally:
            self.give_back(conn)

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or self._closed:
            conn.close()
            self._dropped()
            return
        self._idle.append(conn)
        if self._waiting:
            with self._changed:
                self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._changed.notify_all()
        for conn in idle:
            conn.close()

    def _dropped(self) -> None:
        with self._changed:
            self._open -= 1
            self._changed.notify()

    def _forget_parents(self) -> None:
        """In a forked child: the parent's sessions are the parent's, never to be used."""
        self._idle, self._open, self._waiting = [], 0, 0
        self._changed = threading.Condition()

    def _connect(self) -> psycopg.Connection[Any]:
        pool = self._datastore.pool
        try:
            # The pool's own settings (either may be a callable in psycopg_pool).
            kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {}
            conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
            settings = {
                "connect_timeout": max(1, int(pool.timeout)),
                **kwargs,  # the URL's connect_timeout, if it gave one
                "row_factory": tuple_row,
                "autocommit": True,
            }
            conn = psycopg.connect(conninfo, **settings)
        except psycopg.Error as error:
            raise persistence_error(error) from error
        try:
            if self._datastore.lock_timeout and not self._pooled:
                # Bounds waits for another writer's conflicting row (the library's
                # recorder sets it per transaction, for its table lock; so does a
                # pooled append, in its statement).
                conn.execute(f"SET lock_timeout = '{self._datastore.lock_timeout}s'")
        except BaseException as error:
            conn.close()  # not left open behind the caller's back
            if isinstance(error, psycopg.Error):
                raise persistence_error(error) from error
            raise
        return conn


class KeysWithEvents(Protocol):
    """Data keys made for the events this thread appends next, for the append to store
    in its own transaction (adapters/keys/unsaved.py, decision record 0064)."""

    table: str
    """The key table, as statements spell it."""

    def rows(self) -> list[tuple[str, str, str, str]]:
        """This thread's keys: (key id, owner, wrapped key, key-encryption key id)."""
        ...

    def stored(self) -> None:
        """The append that stored this thread's keys committed."""
        ...


class PreparedAppend:
    """The append functions of one events table, called with binary parameters: through
    statements prepared once in each session (libpq connection), or, `pooled`, through
    unnamed statements that set `lock_timeout` (seconds, 0: none) for their transaction."""

    def __init__(self, table: EventsTable, *, pooled: bool = False, lock_timeout: int = 0) -> None:
        self._table = table
        self._pooled = pooled
        self._lock_timeout = lock_timeout
        self._unnamed: dict[bool, bytes] = {}
        # The sessions (libpq connections) the append statement is prepared in.
        self._prepared_in: weakref.WeakSet[Any] = weakref.WeakSet()
        qualified = f"{table.schema}.{table.append_function_name}"
        self._append_statement_name = f"ll_append_{zlib.crc32(qualified.encode()):08x}".encode()
        self._append_one_statement_name = self._append_statement_name.replace(
            b"ll_append_", b"ll_append1_"
        )
        self._uuid_ids = table.originator_id_type == "uuid"
        # The keyed statements and their names, by (whether they store keys beside
        # others', whether they append one event), and the sessions each is prepared in.
        self._keyed: dict[tuple[bool, bool], tuple[bytes, bytes]] = {}
        self._keyed_in: dict[tuple[bool, bool], weakref.WeakSet[Any]] = {}

    def send(
        self,
        conn: psycopg.Connection[Any],
        stored_events: Sequence[StoredEvent],
        keys: KeysWithEvents | None = None,
    ) -> list[int]:
        """Append the events in the connection's current transaction (autocommit: one of
        its own); their notification ids, in order. `keys`: data keys made for them, stored
        by the same statement (`_keyed_statement`) when this thread holds any.

        Straight through libpq (psycopg's `pgconn`, and its own non-blocking wait, which
        cancels the statement on Ctrl-C): one prepared statement of four binary arrays,
        built here; one event goes as four plain values to the function of one."""
        if keys is not None and (rows := keys.rows()):
            return self._send_with_keys(conn, stored_events, keys, rows)
        pgconn = conn.pgconn
        if self._pooled:
            return self._send_unnamed(conn, stored_events)
        if pgconn not in self._prepared_in:
            self._prepare(conn)
        _begun(conn)
        if len(stored_events) == 1:
            pgconn.send_query_prepared(
                self._append_one_statement_name,
                _append_one_params(stored_events[0], self._uuid_ids),
                _BINARY4,
            )
            value = _result(conn, _TUPLES_OK).get_value(0, 0)
            assert value is not None
            return [int(value)]
        pgconn.send_query_prepared(
            self._append_statement_name, _append_params(stored_events, self._uuid_ids), _BINARY4
        )
        return _bigint_list(_result(conn, _TUPLES_OK).get_value(0, 0))

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        for name, one in (
            (self._append_statement_name, False),
            (self._append_one_statement_name, True),
        ):
            conn.pgconn.send_prepare(name, self._statement(one).as_bytes(conn))
            _result(conn, _COMMAND_OK)
        self._prepared_in.add(conn.pgconn)

    def _statement(self, one: bool) -> Composed:
        types = (self._table.originator_id_type, "bigint", "text", "bytea")
        suffix = "" if one else "[]"
        function = self._table.function_one_sql if one else self._table.function_sql
        params = [SQL(f"${n}::{t}{suffix}") for n, t in enumerate(types, 1)]
        return SQL("SELECT {}({})").format(function, SQL(", ").join(params))

    def _send_unnamed(
        self, conn: psycopg.Connection[Any], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """The append as one unnamed statement (parse, bind, execute, sync: one round
        trip, nothing left in the session). Its lock_timeout is set by a one-time filter,
        which the server evaluates before the function runs, for this transaction only."""
        one = len(stored_events) == 1
        statement = self._unnamed.get(one)
        if statement is None:
            composed = self._statement(one)
            if self._lock_timeout:
                composed = SQL("{} WHERE set_config('lock_timeout', {}, true) IS NOT NULL").format(
                    composed, Literal(f"{self._lock_timeout}s")
                )
            statement = self._unnamed[one] = composed.as_bytes(conn)
        _begun(conn)
        pgconn = conn.pgconn
        if one:
            params = _append_one_params(stored_events[0], self._uuid_ids)
        else:
            params = _append_params(stored_events, self._uuid_ids)
        pgconn.send_query_params(statement, params, param_formats=_BINARY4)
        value = _result(conn, _TUPLES_OK).get_value(0, 0)
        if one:
            assert value is not None
            return [int(value)]
        return _bigint_list(value)

    def _send_with_keys(
        self,
        conn: psycopg.Connection[Any],
        stored_events: Sequence[StoredEvent],
        keys: KeysWithEvents,
        rows: list[tuple[str, str, str, str]],
    ) -> list[int]:
        """The events and their keys in one statement (`_keyed_statement`), which stores
        each key as its owner's. When another process stored a key for one of these
        owners since this one's directory heard of it, the owner's unique key refuses it
        and the statement writes nothing: the one storing such keys beside their owners'
        runs instead. Run every time, that one cost a request 50 us more (decision record
        0068). In a transaction of the caller's, where a refusal would end it, it runs
        alone."""
        one = len(stored_events) == 1
        columns = [[row[n].encode() for row in rows] for n in range(4)]
        params = [
            *(
                _append_one_params(stored_events[0], self._uuid_ids)
                if one
                else _append_params(stored_events, self._uuid_ids)
            ),
            *[_binary_array(_TEXT_OID, column) for column in columns],
            datetime.now(UTC).isoformat().encode(),
        ]
        if conn.autocommit:
            try:
                return self._keyed_append(conn, keys, params, (False, one))
            except psycopg.errors.UniqueViolation as error:
                if not keys.table.endswith(f".{error.diag.table_name}"):
                    raise  # the events' own (a version taken meanwhile)
        return self._keyed_append(conn, keys, params, (True, one))

    def _keyed_append(
        self,
        conn: psycopg.Connection[Any],
        keys: KeysWithEvents,
        params: list[bytes],
        kind: tuple[bool, bool],
    ) -> list[int]:
        """Run a keyed statement of this kind (beside, one): prepared once per session;
        unnamed, with its lock_timeout, through a pooler."""
        if kind not in self._keyed:
            beside, one = kind
            prefix = b"ll_append_k" + (b"b" if beside else b"") + (b"1" if one else b"") + b"_"
            self._keyed[kind] = (
                self._keyed_statement(keys, beside, one).as_bytes(conn),
                self._append_statement_name.replace(b"ll_append_", prefix),
            )
            self._keyed_in[kind] = weakref.WeakSet()
        statement, name = self._keyed[kind]
        _begun(conn)
        pgconn = conn.pgconn
        formats = (1,) * len(params)
        if self._pooled:
            pgconn.send_query_params(statement, params, param_formats=formats)
        else:
            if pgconn not in self._keyed_in[kind]:
                pgconn.send_prepare(name, statement)
                _result(conn, _COMMAND_OK)
                self._keyed_in[kind].add(pgconn)
            pgconn.send_query_prepared(name, params, formats)
        value = _result(conn, _TUPLES_OK).get_value(0, 0)
        assert value is not None
        return [int(value)] if kind[1] else _bigint_list(value)

    def _keyed_statement(self, keys: KeysWithEvents, beside: bool, one: bool) -> Composed:
        """The append of events ($1-$4: arrays, or `one` event's values) with their keys'
        rows ($5-$8: ids, owners, wrapped keys, key-encryption key ids; $9 when made).

        The events go first (the append must be its transaction's first write: decision
        record 0001); the keys' rows are read beside its result, so stored after it, in
        one order of owners everywhere (two writers never wait for each other's keys in
        a circle). `beside`: a key whose owner has one already (stored by another process
        a moment ago) is stored beside it, as `<owner>+<key id>`: the events sealed under
        it stay readable, and erasing the owner destroys both. (A statement in WITH that
        writes runs to its end whether or not anything reads it.)"""
        limit: SQL | Composed = SQL("")
        if self._pooled and self._lock_timeout:
            limit = SQL(" WHERE set_config('lock_timeout', {}, true) IS NOT NULL").format(
                Literal(f"{self._lock_timeout}s")
            )
        into = SQL("INSERT INTO {} (key_id, owner, wrapped, kek_id, created_at)").format(
            SQL(keys.table)
        )
        insert = SQL("{} SELECT key_id, owner, wrapped, kek_id, $9 FROM made ORDER BY owner")
        stored = SQL(" stored AS ({})").format(insert.format(into))
        if beside:
            stored = SQL(
                " first AS ({insert} ON CONFLICT (owner) DO NOTHING RETURNING key_id),"
                " beside AS ({into}"
                " SELECT key_id, owner || {beside} || key_id, wrapped, kek_id, $9 FROM made"
                " WHERE key_id NOT IN (SELECT key_id FROM first))"
            ).format(insert=insert.format(into), into=into, beside=Literal(BESIDE))
        return SQL(
            "WITH appended AS (SELECT {function}($1, $2, $3, $4) AS ids{limit}),"
            " made AS (SELECT k.* FROM appended,"
            " unnest($5::text[], $6::text[], $7::text[], $8::text[])"
            " AS k(key_id, owner, wrapped, kek_id)),"
            "{stored}"
            " SELECT ids FROM appended"
        ).format(
            function=self._table.function_one_sql if one else self._table.function_sql,
            limit=limit,
            stored=stored,
        )


_ERRORS: list[tuple[type[psycopg.Error], type[PersistenceError]]] = [
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.DatabaseError, DatabaseError),
]


def persistence_error(error: psycopg.Error) -> PersistenceError:
    """The library's persistence error for a psycopg error (as its datastore maps them)."""
    for driver_class, library_class in _ERRORS:
        if isinstance(error, driver_class):
            return library_class(str(error))
    return PersistenceError(str(error))


def _begun(conn: psycopg.Connection[Any]) -> None:
    """Outside autocommit psycopg begins a transaction before a statement: so does this."""
    if not conn.autocommit and conn.pgconn.transaction_status == _IDLE:
        conn.pgconn.send_query(b"BEGIN")
        _result(conn, _COMMAND_OK)


def _result(conn: psycopg.Connection[Any], expected: psycopg.pq.ExecStatus) -> PGresult:
    """The result of the statement just sent on `conn`, waited for as psycopg waits; its
    error raised as psycopg raises it."""
    result: PGresult = conn.wait(psycopg.generators.execute(conn.pgconn))[-1]
    if result.status != expected:
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return result


def _append_params(events: Sequence[StoredEvent], uuid_ids: bool) -> list[bytes]:
    """The append statement's four parameters: the events' columns as binary arrays."""
    count = len(events)
    if uuid_ids:
        ids = _ARRAY_HEADER.pack(1, 0, _UUID_OID, count, 1) + b"".join(
            [_LENGTH_16 + _uuid(e.originator_id).bytes for e in events]
        )
    else:
        ids = _binary_array(_TEXT_OID, [str(e.originator_id).encode() for e in events])
    versions = _ARRAY_HEADER.pack(1, 0, _INT8_OID, count, 1) + struct.pack(
        "!" + "iq" * count, *[part for e in events for part in (8, e.originator_version)]
    )
    topics = _binary_array(_TEXT_OID, [e.topic.encode() for e in events])
    states = _binary_array(_BYTEA_OID, [bytes(e.state) for e in events])
    return [ids, versions, topics, states]


def _append_one_params(event: StoredEvent, uuid_ids: bool) -> list[bytes]:
    """The parameters of the function of one event, in binary."""
    originator_id = event.originator_id
    return [
        _uuid(originator_id).bytes if uuid_ids else str(originator_id).encode(),
        _INT8.pack(event.originator_version),
        event.topic.encode(),
        bytes(event.state),
    ]


def _binary_array(oid: int, items: list[bytes]) -> bytes:
    header = _ARRAY_HEADER.pack(1, 0, oid, len(items), 1)
    return header + b"".join([struct.pack("!i", len(item)) + item for item in items])


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _bigint_list(text: bytes | None) -> list[int]:
    """`{1,2,3}` (a bigint[] in text form) as [1, 2, 3]."""
    assert text is not None and text[:1] == b"{"
    return [int(item) for item in text[1:-1].split(b",")] if len(text) > 2 else []
