"""`students encrypt-existing` rewrites events the log's tree already covers: the tree is
re-anchored with a signed record that `audit verify` checks and shows, a checkpoint from
before the migration still holds, and an edit made afterwards is still caught. A log with
more than rewritten events is not re-anchored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.audit.ledger_audit import open_audit
from domain import LessonLedger
from tests.support.command_line import cli
from tests.support.stores import Store
from tests.support.student_data import all_markers, as_before_sealing, generate, request


def written_before_sealing(store: Store, ledger: LessonLedger) -> None:
    """Lessons as the release before sealing wrote them, already in the log's tree."""
    before = as_before_sealing(ledger)
    for n in range(3):
        lesson_id = request(before, f"{8 + n:02d}:00-{8 + n:02d}:30", "ada", "ben")
        generate(before, lesson_id, *all_markers("ada"))
    audit = open_audit(store.database, ledger)
    audit.catch_up()
    audit.close()


def verify(store: Store, *options: str) -> tuple[int, Any]:
    ran = cli("audit", "verify", "--json", *options, database_url=store.url)
    assert ran.exit_code in (0, 1), ran.stderr
    return ran.exit_code, ran.json()


def test_encrypt_existing_re_anchors_the_tree_and_audit_verify_accepts_it(
    store: Store, ledger: LessonLedger, tmp_path: Path
) -> None:
    written_before_sealing(store, ledger)
    saved = tmp_path / "before-migration.json"
    assert cli("audit", "checkpoint", "-o", str(saved), database_url=store.url).exit_code == 0

    migrated = cli("students", "encrypt-existing", database_url=store.url)

    assert migrated.exit_code == 0, migrated.stderr
    assert "re-anchored the log's tree: 6 events rewritten" in migrated.stderr
    code, report = verify(store, "--against", str(saved))
    assert code == 0, report
    (record,) = report["reanchorings"]
    assert record["ok"] and record["changed_events"] == 6
    assert "encrypt-existing" in record["reason"]
    assert report["checkpoint"]["ok"]  # the log as it was then still makes its root
    shown = cli("audit", "verify", database_url=store.url).stdout
    assert "re-anchoring" in shown and "6 events rewritten" in shown and "accepted" in shown
    again = cli("students", "encrypt-existing", database_url=store.url)
    assert again.exit_code == 0 and "re-anchored" not in again.stderr  # nothing left to do

    # An edit after the migration is caught as before.
    table = store.database.events_table
    at = "notification_id" if store.kind == "postgresql" else "rowid"
    store.execute(f"UPDATE {table} SET topic = topic || 'x' WHERE {at} = 2")
    code, report = verify(store)
    assert code == 1 and [f["kind"] for f in report["findings"]] == ["altered"]


def test_a_re_anchoring_record_edited_afterwards_is_refused(
    store: Store, ledger: LessonLedger
) -> None:
    written_before_sealing(store, ledger)
    assert cli("students", "encrypt-existing", database_url=store.url).exit_code == 0
    audit = open_audit(store.database, ledger)
    store.execute(f"UPDATE {audit.store.reanchorings_table} SET reason = 'a routine fix'")
    audit.close()

    code, report = verify(store)

    assert code == 1
    assert report["reanchorings"][0]["problem"] == "not signed by the ledger's key"


def test_a_log_with_an_event_removed_is_not_re_anchored(store: Store, ledger: LessonLedger) -> None:
    written_before_sealing(store, ledger)
    table = store.database.events_table
    at = "notification_id" if store.kind == "postgresql" else "rowid"
    (last,) = store.query(f"SELECT max({at}) FROM {table}")[0]
    store.execute(f"DELETE FROM {table} WHERE {at} = %s", (last,))  # the last lesson's result

    migrated = cli("students", "encrypt-existing", database_url=store.url)

    assert migrated.exit_code == 1
    assert "not re-anchored: 1 event(s) missing, inserted or moved" in migrated.stderr
    assert verify(store)[0] == 1
