"""Erasure records under signed checkpoints, on SQLite and PostgreSQL: a checkpoint covers
the erasure log as it was; `audit verify --against` it holds while the records stand, and
names the erasure log once a covered record is altered, removed or slipped in among them.
Records are placed one writer at a time (racing erasures get positions 1..N), records of
a release before are placed in the order of their times, and a checkpoint of a release
before (none covered) still holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.audit.ledger_audit import LedgerAudit, open_audit
from adapters.keys.erasure import Erasures
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from projections.merkle.checkpoint import signed
from tests.support.command_line import cli
from tests.support.projections import table_name
from tests.support.served import served
from tests.support.stores import Store
from tests.support.student_data import request

STUDENTS = ("ada", "ben")


@pytest.fixture
def erasures(store: Store, ledger: LessonLedger) -> Iterator[Erasures]:
    request(ledger, "08:30-09:00", *STUDENTS)
    request(ledger, "09:00-09:30", "ada", day="2025-09-09")
    yield Erasures(sealer_of(ledger), store.database)


@pytest.fixture
def audit(store: Store, ledger: LessonLedger, erasures: Erasures) -> Iterator[LedgerAudit]:
    opened = open_audit(store.database, ledger)
    opened.catch_up()
    yield opened
    opened.close()


def erase_both(erasures: Erasures) -> None:
    for name in STUDENTS:
        assert erasures.erase_student(f"student-{name}", actor="admin", reason=f"request {name}")


def verify_against(store: Store, saved: Path) -> tuple[int, Any]:
    ran = cli("audit", "verify", "--json", "--against", str(saved), database_url=store.url)
    assert ran.exit_code in (0, 1), ran.stderr
    return ran.exit_code, ran.json()["checkpoint"]


def checkpoint_file(store: Store, tmp_path: Path) -> Path:
    saved = tmp_path / "checkpoint.json"
    assert cli("audit", "checkpoint", "-o", str(saved), database_url=store.url).exit_code == 0
    return saved


def erasure_tables(store: Store) -> dict[str, str]:
    return {
        "erasures": table_name(store, "erasures"),
        "positions": table_name(store, "erasure_positions"),
    }


def test_a_checkpoint_covers_the_erasure_log_and_holds_while_it_stands(
    store: Store, erasures: Erasures, audit: LedgerAudit, tmp_path: Path
) -> None:
    erase_both(erasures)
    saved = checkpoint_file(store, tmp_path)
    erasures.erase_student("student-none", actor="admin", reason="unknown")  # no record
    later = erasures.retention(datetime.now(UTC).date(), actor="admin", reason="policy")

    code, checkpoint = verify_against(store, saved)

    assert code == 0 and checkpoint["ok"], checkpoint
    assert checkpoint["erasures"]["count"] == 2  # what there was when it was signed
    assert later.keys > 0 and len(erasures.records()) == 3  # a later record: not covered
    assert [r.reason for r in erasures.records()] == ["request ada", "request ben", "policy"]
    assert audit.checkpoint().erasures is not None
    assert audit.latest_checkpoint().erasures.count == 3  # type: ignore[union-attr]


EDITS = {
    "altered": "UPDATE {erasures} SET reason = 'routine' WHERE reason = 'request ada'",
    "removed": "DELETE FROM {erasures} WHERE reason = 'request ada'",
    "removed with its place": (
        "DELETE FROM {positions} WHERE erasure_id IN"
        " (SELECT erasure_id FROM {erasures} WHERE reason = 'request ada')"
    ),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_a_covered_erasure_record_altered_or_removed_is_named(
    store: Store, erasures: Erasures, audit: LedgerAudit, tmp_path: Path, edit: str
) -> None:
    erase_both(erasures)
    saved = checkpoint_file(store, tmp_path)
    names = erasure_tables(store)

    store.execute(EDITS[edit].format(**names))
    if edit == "removed with its place":
        store.execute(f"DELETE FROM {names['erasures']} WHERE reason = 'request ada'")
        store.execute(f"UPDATE {names['positions']} SET position = position - 1")
    code, checkpoint = verify_against(store, saved)

    assert code == 1 and not checkpoint["ok"]
    assert "erasure records" in checkpoint["problem"], checkpoint


def test_a_record_slipped_in_among_covered_ones_is_named(
    store: Store, erasures: Erasures, audit: LedgerAudit, tmp_path: Path
) -> None:
    erase_both(erasures)
    saved = checkpoint_file(store, tmp_path)
    names = erasure_tables(store)

    earlier = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    store.execute(
        f"INSERT INTO {names['erasures']} VALUES ('forged', 'student', %s, 'admin', 'x', 1, 1)",
        (earlier,),
    )
    store.execute(f"UPDATE {names['positions']} SET position = position + 10")
    store.execute(f"UPDATE {names['positions']} SET position = position - 9")
    store.execute(f"INSERT INTO {names['positions']} VALUES (1, 'forged')")
    code, checkpoint = verify_against(store, saved)

    assert code == 1 and "do not make its digest" in checkpoint["problem"]


def test_a_checkpoint_of_a_release_before_still_holds(
    erasures: Erasures, audit: LedgerAudit
) -> None:
    erase_both(erasures)
    size = audit.tree.size()
    before = signed(audit.signer, size, audit.tree.root(size), datetime.now(UTC))

    report = audit.verify(before)

    assert before.erasures is None and before.as_json().keys() == {
        "size",
        "root",
        "time",
        "key_id",
        "signature",
    }
    assert report.ok and report.checkpoint is not None and report.checkpoint.problem is None


def test_records_of_a_release_before_are_placed_in_the_order_of_their_times(
    store: Store, erasures: Erasures, audit: LedgerAudit
) -> None:
    erase_both(erasures)
    positions = table_name(store, "erasure_positions")
    store.execute(f"DELETE FROM {positions}")  # as a release before kept them: no places
    store.execute(
        f"UPDATE {table_name(store, 'erasures')} SET erased_at = %s WHERE reason = 'request ben'",
        ((datetime.now(UTC) - timedelta(days=1)).isoformat(),),
    )

    checkpoint = audit.checkpoint()
    erasures.retention(datetime.now(UTC).date(), actor="admin", reason="policy")

    assert [r.reason for r in erasures.records()] == ["request ben", "request ada", "policy"]
    placed = store.query(f"SELECT position FROM {positions} ORDER BY position")
    assert [int(str(p)) for (p,) in placed] == [1, 2, 3]
    assert checkpoint.erasures is not None and checkpoint.erasures.count == 2
    assert audit.verify(checkpoint).ok


def test_racing_erasures_are_placed_one_after_another(postgres_store: Store) -> None:
    ledger = postgres_store.open()
    names = [f"racer-{n}" for n in range(8)]
    for n, name in enumerate(names):
        ledger.request_lesson(
            provider_id="7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11",
            school_id="school-1",
            lesson_date="2025-09-10",
            time_slot=f"{8 + n:02d}:00-{8 + n:02d}:30",
            request_id=f"race-{n}",
            actor="teacher",
            details={"students": [{"id": name, "grade": 3}], "subject": "Reading"},
        )
    start = threading.Barrier(len(names))
    failures: list[BaseException] = []

    def erase(name: str) -> None:
        own = Erasures(sealer_of(ledger), postgres_store.database)
        try:
            start.wait(10)
            assert own.erase_student(name, actor="admin", reason=name) is not None
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=erase, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not failures, failures
    placed = postgres_store.query(
        f"SELECT position FROM {table_name(postgres_store, 'erasure_positions')} ORDER BY 1"
    )
    assert [int(str(p)) for (p,) in placed] == list(range(1, len(names) + 1))
    records = Erasures(sealer_of(ledger), postgres_store.database).records()
    assert sorted(r.reason for r in records) == sorted(names)


def test_the_api_publishes_what_a_checkpoint_covers(store: Store) -> None:
    with served(store.url) as api:
        admin = api.auth("admin")
        request(api.app.state.ledger, "08:30-09:00", *STUDENTS)
        erased = api.client.post(
            "/v1/students/student-ada/erasure", json={"reason": "request"}, headers=admin
        )
        api.app.state.audit.catch_up()
        made = api.app.state.audit.checkpoint()
        published = api.client.get("/v1/audit/checkpoint", headers=admin).json()

    assert erased.status_code == 200, erased.text
    assert made.erasures is not None
    assert published["erasures"] == {"count": 1, "digest": made.erasures.digest.hex()}
