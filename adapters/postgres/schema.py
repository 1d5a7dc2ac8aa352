"""The events table of the ledger's PostgreSQL recorder: its DDL, the plpgsql of its
append functions, and the upgrade of a table made by the library's recorder.

What the functions do, and why: the recorder's module docstring and
docs/decisions/0001-postgres-recorder-without-table-lock.md.
"""

from __future__ import annotations

import zlib
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal

# First half of the advisory lock key around drawing notification ids ("LLEV"); the second
# half is the events table's oid, so ledgers in other schemas do not contend.
_APPEND_LOCK_NAMESPACE = 0x4C4C4556
# Serialises upgrading a table made by the library's recorder, across processes.
_UPGRADE_LOCK_KEY = 0x4C4C_5550_4752_4144 & 0x7FFF_FFFF_FFFF_FFFF
# Written into the append function's body; a function without it (made by an earlier
# release) is replaced when a recorder first uses the table.
_APPEND_FUNCTION_REVISION = (
    "-- lesson-ledger append, revision 4 (rows in key order; one event; lock released on error)"
)


class EventsTable:
    """One events table: its names and those of its append functions (as text and as
    SQL), its DDL, and its upgrade."""

    def __init__(self, schema: str, name: str, originator_id_type: str) -> None:
        self.schema = schema
        self.name = name
        self.originator_id_type = originator_id_type
        self.qualified_name = f'"{schema}"."{name}"'
        self.append_function_name = _derived_name(name, "append")
        self.append_one_function_name = _derived_name(name, "append_one")
        self.sql = SQL("{}.{}").format(Identifier(schema), Identifier(name))
        self.function_sql = SQL("{}.{}").format(
            Identifier(schema), Identifier(self.append_function_name)
        )
        self.function_one_sql = SQL("{}.{}").format(
            Identifier(schema), Identifier(self.append_one_function_name)
        )

    def create_table_statement(self) -> Composed:
        """The table as the library makes it, plus `tx`."""
        return SQL(
            "CREATE TABLE IF NOT EXISTS {table} ("
            "originator_id {originator_id_type} NOT NULL, "
            "originator_version bigint NOT NULL, "
            "topic text, "
            "state bytea, "
            "notification_id bigserial, "
            "tx xid8 NOT NULL, "
            "PRIMARY KEY "
            "(originator_id, originator_version)) "
            "WITH ("
            "    autovacuum_enabled = true,"
            "    autovacuum_vacuum_threshold = 100000000,"
            "    autovacuum_vacuum_scale_factor = 0.5,"
            "    autovacuum_analyze_threshold = 1000,"
            "    autovacuum_analyze_scale_factor = 0.01"
            ")"
        ).format(
            table=self.sql,
            originator_id_type=Identifier(self.originator_id_type),
        )

    def upgrade(self, curs: psycopg.Cursor[DictRow]) -> None:
        """Add `tx` to a table made by the library's recorder, and (re)create the append
        functions, whose text names the table's sequence and oid."""
        curs.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'tx' "
            "AND NOT attisdropped",
            (self.qualified_name,),
        )
        if curs.fetchone() is None:
            # Every row already there was committed before this ALTER got its lock.
            curs.execute(
                SQL("ALTER TABLE {} ADD COLUMN tx xid8 NOT NULL DEFAULT '0'").format(self.sql)
            )
            curs.execute(SQL("ALTER TABLE {} ALTER COLUMN tx DROP DEFAULT").format(self.sql))
        curs.execute(
            "SELECT %s::regclass::oid::bigint AS oid, "
            "pg_get_serial_sequence(%s, 'notification_id') AS seq",
            (self.qualified_name, self.qualified_name),
        )
        found = curs.fetchone()
        assert found is not None
        for statement in self._append_functions_sql(int(found["oid"]), str(found["seq"])):
            curs.execute(statement)

    def state(self, conn: psycopg.Connection[Any]) -> tuple[bool, bool]:
        """Whether the table exists, and whether its append functions are this
        release's."""
        found = (
            conn.cursor(row_factory=tuple_row)
            .execute(
                "SELECT to_regclass(%(table)s) IS NOT NULL AS table, "
                "count(*) = 2 AS current FROM pg_proc "
                "WHERE oid IN (to_regproc(%(many)s), to_regproc(%(one)s)) "
                "AND strpos(prosrc, %(revision)s) > 0",
                {
                    "table": self.qualified_name,
                    "many": f'"{self.schema}"."{self.append_function_name}"',
                    "one": f'"{self.schema}"."{self.append_one_function_name}"',
                    "revision": _APPEND_FUNCTION_REVISION,
                },
            )
            .fetchone()
        )
        return (bool(found[0]), bool(found[1])) if found else (False, False)

    def upgrade_if_needed(self, conn: psycopg.Connection[DictRow]) -> bool:
        """Upgrade a table the library's recorder made, or append functions an earlier
        release made (several processes may try at once: one does it, under an advisory
        lock). False if the table does not exist yet."""
        exists, current = self.state(conn)
        if not exists:
            return False  # not created yet: create_table() will make it as it should be
        if not current:
            # Transaction-scoped: it holds through a transaction pooler too.
            with conn.transaction(), conn.cursor() as curs:
                curs.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK_KEY,))
                self.upgrade(curs)
        return True

    def _append_functions_sql(self, table_oid: int, sequence: str) -> list[Composed]:
        """The append functions: of many events (arrays), and of one (a save of one
        event, the usual command, costs the server about 40 us less without arrays)."""
        # Written for speed: every step but the INSERT is a "simple expression", which
        # plpgsql evaluates without the executor (PERFORM and sub-selects go through it).
        # No SET clause (a per-call cost): the session's lock_timeout applies.
        # The session lock is held only inside the function: released before the INSERT,
        # and on any error while it is held (cancellation included), so that it never
        # outlives the statement, also on a pooler's shared server session
        # (docs/decisions/0030-transaction-poolers.md).
        lock_key = (_APPEND_LOCK_NAMESPACE << 32) | table_oid
        first_write_only = (
            "  IF pg_current_xact_id_if_assigned() IS NOT NULL THEN\n"
            "    RAISE EXCEPTION USING ERRCODE = 'invalid_transaction_state', MESSAGE =\n"
            "      'appending events must be the first write of its transaction',\n"
            "      HINT = 'the transaction id must be assigned while ids are drawn';\n"
            "  END IF;\n"
            "  IF pg_advisory_lock({lock_key})::text = 'x' THEN NULL; END IF;\n"
            "  BEGIN\n"
            "    my_tx := pg_current_xact_id();\n"
        )
        unlock_on_error = (
            "  EXCEPTION WHEN OTHERS OR query_canceled THEN\n"
            "    IF pg_advisory_unlock({lock_key}) THEN NULL; END IF;\n"
            "    RAISE;\n"
            "  END;\n"
        )
        many = SQL(
            "CREATE OR REPLACE FUNCTION {function}("
            "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
            "RETURNS bigint[] LANGUAGE plpgsql AS $body$\n"
            "{revision}\n"
            "DECLARE\n"
            "  my_tx xid8;\n"
            "  nids bigint[];\n"
            "BEGIN\n" + first_write_only + "    FOR i IN 1..cardinality(ids) LOOP\n"
            "      nids[i] := nextval({sequence}::regclass);\n"
            "    END LOOP;\n"
            + unlock_on_error
            + "  IF pg_advisory_unlock({lock_key}) THEN NULL; END IF;\n"
            "  INSERT INTO {table} (originator_id, originator_version, topic, state,\n"
            "                       notification_id, tx)\n"
            "  SELECT e.i, e.v, e.t, e.s, e.n, my_tx\n"
            "  FROM unnest(ids, versions, topics, states, nids) AS e(i, v, t, s, n)\n"
            "  ORDER BY e.i, e.v;  -- one order for every writer: no deadlocks\n"
            "  RETURN nids;\n"
            "END\n"
            "$body$"
        )
        one = SQL(
            "CREATE OR REPLACE FUNCTION {function_one}("
            "id {id_type}, version bigint, topic text, state bytea) "
            "RETURNS bigint LANGUAGE plpgsql AS $body$\n"
            "{revision}\n"
            "DECLARE\n"
            "  my_tx xid8;\n"
            "  nid bigint;\n"
            "BEGIN\n"
            + first_write_only
            + "    nid := nextval({sequence}::regclass);\n"
            + unlock_on_error
            + "  IF pg_advisory_unlock({lock_key}) THEN NULL; END IF;\n"
            "  INSERT INTO {table} (originator_id, originator_version, topic, state,\n"
            "                       notification_id, tx)\n"
            "  VALUES (id, version, topic, state, nid, my_tx);\n"
            "  RETURN nid;\n"
            "END\n"
            "$body$"
        )
        names = {
            "function": self.function_sql,
            "function_one": self.function_one_sql,
            "revision": SQL(_APPEND_FUNCTION_REVISION),
            "id_type": SQL(self.originator_id_type),
            "lock_key": Literal(lock_key),
            "sequence": Literal(sequence),
            "table": self.sql,
        }
        return [many.format(**names), one.format(**names)]


def _derived_name(table: str, suffix: str) -> str:
    """`<table>_<suffix>`, shortened with a checksum to fit PostgreSQL's 63 bytes."""
    name = f"{table}_{suffix}"
    if len(name) <= PostgresApplicationRecorder.MAX_IDENTIFIER_LEN:
        return name
    checksum = f"{zlib.crc32(table.encode()):08x}"
    keep = PostgresApplicationRecorder.MAX_IDENTIFIER_LEN - len(suffix) - len(checksum) - 2
    return f"{table[:keep]}_{checksum}_{suffix}"
