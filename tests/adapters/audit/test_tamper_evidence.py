"""`lesson-ledger audit verify` against edits made straight in the database, on SQLite and
PostgreSQL: after a mixed workload the log is intact (exit 0); one event's state
changed, one deleted, one slipped in, two swapped: each time exit 1, the event named and
the first position where the log diverges. A checkpoint taken before more writes holds
against the later tree, and fails once a row is removed and the tree rebuilt to match."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from adapters.audit.ledger_audit import LedgerAudit, open_audit
from domain import LessonLedger
from tests.support.command_line import cli
from tests.support.generation import request_lessons
from tests.support.projections import mixed_workload
from tests.support.stores import Store


@pytest.fixture
def audit(store: Store, ledger: LessonLedger) -> Iterator[LedgerAudit]:
    for _ in range(3):
        mixed_workload(ledger)
    opened = open_audit(store.database, ledger)
    opened.catch_up()
    yield opened
    opened.close()


def verify(store: Store, *options: str) -> tuple[int, Any]:
    ran = cli("audit", "verify", "--json", *options, database_url=store.url)
    assert ran.exit_code in (0, 1), ran.stderr
    return ran.exit_code, ran.json()


def events(store: Store) -> list[tuple[int, UUID, int]]:
    """Every stored event: (position, lesson id, version), in log order."""
    position = "notification_id" if store.kind == "postgresql" else "rowid"
    rows = store.query(
        f"SELECT {position}, originator_id, originator_version FROM {store.database.events_table}"
        f" ORDER BY {position}"
    )
    return [(int(p), UUID(str(lesson)), int(version)) for p, lesson, version in rows]


def named(report: Any, kind: str) -> set[tuple[str, int, int]]:
    return {
        (found["lesson_id"], found["version"], found["position"])
        for found in report["findings"]
        if found["kind"] == kind
    }


def column(store: Store) -> str:
    return "notification_id" if store.kind == "postgresql" else "rowid"


def test_a_new_ledger_is_intact_and_holds_a_checkpoint_of_no_events(
    store: Store, ledger: LessonLedger, tmp_path: Path
) -> None:
    code, report = verify(store)
    assert code == 0 and report["ok"] and report["size"] == 0, report
    kept = tmp_path / "checkpoint.json"
    signed = cli("audit", "checkpoint", "--output", str(kept), database_url=store.url)
    assert signed.exit_code == 0, signed.stderr
    code, report = verify(store, "--against", str(kept))
    assert code == 0 and report["checkpoint"]["ok"], report


def test_a_verify_while_the_tree_takes_new_events_finds_the_log_intact(
    store: Store, ledger: LessonLedger, audit: LedgerAudit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's follower goes on adding events to the tree while a verify (the Proof
    page's, say) walks the log: what it adds is not a difference."""
    before = audit.tree.size()
    walk = audit.tree.store.leaves

    def leaves_while_the_tree_grows() -> Iterator[Any]:
        mixed_workload(ledger)  # as the walk begins, more events, taken by the tree
        assert audit.catch_up() and audit.tree.size() > before
        return walk()

    checkpoint = audit.checkpoint()  # of the tree as it is when the verify begins
    monkeypatch.setattr(audit.tree.store, "leaves", leaves_while_the_tree_grows)

    report = audit.verify(checkpoint)

    assert report.comparison.findings == [] and report.tree_root_ok, report.as_json()
    assert report.ok and report.comparison.size == before
    assert report.checkpoint is not None and report.checkpoint.problem is None
    monkeypatch.undo()
    assert audit.verify(checkpoint).comparison.size == audit.tree.size() > before


def test_after_a_mixed_workload_the_log_is_intact(store: Store, audit: LedgerAudit) -> None:
    code, report = verify(store)
    assert code == 0
    assert report["ok"] and report["findings"] == [] and report["tree_root_ok"]
    assert report["size"] == len(events(store)) > 100
    plain = cli("audit", "verify", database_url=store.url)
    assert f"intact: {report['size']} events" in plain.stdout
    assert report["events_after"] == 0 and "not in the tree" not in plain.stdout


def test_events_the_tree_does_not_hold_yet_are_said_to_be_unchecked(
    store: Store, ledger: LessonLedger, audit: LedgerAudit
) -> None:
    """Without a server, the tree stops where it was last caught up: a verify checks it
    and says what came after, which it did not check."""
    size = audit.tree.size()
    mixed_workload(ledger)
    later = len(events(store)) - size

    code, report = verify(store)
    plain = cli("audit", "verify", database_url=store.url).stdout

    assert code == 0 and report["size"] == size and report["events_after"] == later > 0
    assert f"{later} events recorded after position {report['position']}: not" in plain
    assert "not in the tree yet, so not verified" in plain
    assert cli("audit", "checkpoint", database_url=store.url).exit_code == 0
    assert verify(store)[1]["events_after"] == 0
    # One more event (a lesson requested) is said in the singular.
    request_lessons(ledger, 1, prefix="one-more")
    one = cli("audit", "verify", database_url=store.url).stdout
    at = verify(store)[1]["position"]
    assert f"1 event recorded after position {at}: not in the tree yet" in one


def test_an_event_whose_state_was_changed_is_named(store: Store, audit: LedgerAudit) -> None:
    position, lesson_id, version = events(store)[40]
    table = store.database.events_table
    (state,) = store.query(f"SELECT state FROM {table} WHERE {column(store)} = {position}")[0]
    edited = bytes(state).replace(b'"actor":"teacher"', b'"actor":"mallory"', 1)
    edited = edited if edited != bytes(state) else bytes(state) + b" "
    store.execute(f"UPDATE {table} SET state = %s WHERE {column(store)} = %s", (edited, position))

    code, report = verify(store)

    assert code == 1 and not report["ok"]
    assert named(report, "altered") == {(str(lesson_id), version, position)}
    assert report["first_divergence"] == position


def test_a_deleted_event_is_named(store: Store, audit: LedgerAudit) -> None:
    position, lesson_id, version = events(store)[25]
    table = store.database.events_table
    store.execute(f"DELETE FROM {table} WHERE {column(store)} = %s", (position,))

    code, report = verify(store)

    assert code == 1
    assert named(report, "missing") == {(str(lesson_id), version, position)}
    assert report["first_divergence"] == position
    plain = cli("audit", "verify", database_url=store.url).stdout
    assert f"missing: lesson {lesson_id} version {version} (was at position {position}" in plain
    assert f"the log diverges from the tree at position {position}" in plain


def test_an_event_slipped_in_is_named(store: Store, audit: LedgerAudit) -> None:
    stored = events(store)
    position, lesson_id, _ = stored[30]
    last_version = max(v for _, lesson, v in stored if lesson == lesson_id)
    _slip_in(store, position, lesson_id, last_version + 1)

    code, report = verify(store)

    assert code == 1
    assert named(report, "inserted") == {(str(lesson_id), last_version + 1, position)}
    assert report["first_divergence"] == position


def test_two_events_swapped_are_named(store: Store, audit: LedgerAudit) -> None:
    stored = events(store)
    (first, a, va), (second, b, vb) = next(
        (x, y) for x, y in itertools.pairwise(stored[50:]) if x[1] != y[1]
    )
    table, at = store.database.events_table, column(store)
    for old, new in ((first, -1), (second, first), (-1, second)):
        store.execute(f"UPDATE {table} SET {at} = %s WHERE {at} = %s", (new, old))

    code, report = verify(store)

    assert code == 1
    assert named(report, "moved") == {(str(a), va, second), (str(b), vb, first)}
    assert report["first_divergence"] == first


def test_a_checkpoint_holds_against_the_later_tree_and_not_against_a_rewritten_one(
    store: Store, ledger: LessonLedger, audit: LedgerAudit, tmp_path: Path
) -> None:
    saved = tmp_path / "checkpoint.json"
    assert cli("audit", "checkpoint", "-o", str(saved), database_url=store.url).exit_code == 0
    mixed_workload(ledger)  # more writes after the checkpoint
    audit.catch_up()

    code, report = verify(store, "--against", str(saved))
    assert code == 0
    assert report["checkpoint"]["ok"] and report["checkpoint"]["size"] < report["size"]

    # Someone removes a row and rebuilds the tree from what is left: the tree matches the
    # log again, and only the checkpoint kept outside the database tells.
    position = events(store)[10][0]
    store.execute(
        f"DELETE FROM {store.database.events_table} WHERE {column(store)} = %s", (position,)
    )
    _rebuild_tree(store, audit)
    assert verify(store)[0] == 0

    code, report = verify(store, "--against", str(saved))
    assert code == 1
    assert "do not make its root" in report["checkpoint"]["problem"]


def test_a_checkpoint_signed_by_another_key_is_refused(
    store: Store, audit: LedgerAudit, tmp_path: Path
) -> None:
    saved = tmp_path / "checkpoint.json"
    assert cli("audit", "checkpoint", "-o", str(saved), database_url=store.url).exit_code == 0
    other_key = "5OGBtlTOb0w9lxAGA+SVNn2lWlw/y2DiTgNEB5B8WGA="

    code, report = verify(store, "--against", str(saved), "--public-key", other_key)

    assert code == 1
    assert report["checkpoint"]["problem"].endswith("is not signed by this key")
    bad = cli("audit", "verify", "--public-key", "not-base64!", database_url=store.url)
    assert bad.exit_code == 2 and "--public-key" in bad.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"[", "is not JSON: Expecting value: line 1 column 2 (char 1)"),
        (b"[]", "is not a checkpoint"),
        (b"\xff{}", "is not UTF-8 text: invalid start byte at byte 0"),
        (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply to read"),
    ],
    ids=["not-json", "a-list", "not-utf8", "too-deep"],
)
def test_a_file_that_is_no_checkpoint_is_one_line(
    store: Store, tmp_path: Path, content: bytes, said: str
) -> None:
    given = tmp_path / "checkpoint.json"
    given.write_bytes(content)

    ran = cli("audit", "verify", "--against", str(given), database_url=store.url)

    assert ran.exit_code == 2
    assert ran.stderr.strip() == f"invalid: --against: {said}"


def _slip_in(store: Store, position: int, lesson_id: UUID, version: int) -> None:
    """Renumber the events from `position` on, one up, and put a forged event of this
    lesson there (a copy of the bytes of the event that was at `position`)."""
    table, at = store.database.events_table, column(store)
    # Every column as stored, the PostgreSQL recorder's transaction id included.
    extra = ", tx" if store.kind == "postgresql" else ""
    (topic, state, *rest) = store.query(
        f"SELECT topic, state{extra} FROM {table} WHERE {at} = {position}"
    )[0]
    (lesson,) = store.query(  # the lesson's id as the store spells it
        f"SELECT originator_id FROM {table}"
        f" WHERE originator_id IN ('{lesson_id}', '{lesson_id.hex}') LIMIT 1"
    )[0]
    shift = 1_000_000
    store.execute(f"UPDATE {table} SET {at} = {at} + {shift} WHERE {at} >= %s", (position,))
    store.execute(f"UPDATE {table} SET {at} = {at} - {shift} + 1 WHERE {at} >= %s", (shift,))
    store.execute(
        f"INSERT INTO {table} ({at}, originator_id, originator_version, topic, state{extra})"
        f" VALUES (%s, %s, %s, %s, %s{', %s' * len(rest)})",
        (position, lesson, version, topic, bytes(state), *rest),
    )


def _rebuild_tree(store: Store, audit: LedgerAudit) -> None:
    """What a writer who also holds the tree's tables could do: start it again."""
    for table in ("merkle_blocks", "merkle_nodes"):
        store.execute(f"DELETE FROM {audit.store.sql.table(table)}")
    store.execute(f"UPDATE {audit.store.position_table} SET position = 0, size = 0")
    audit.catch_up()
