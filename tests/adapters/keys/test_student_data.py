"""Students' details sealed at rest and erasable from an append-only log, on SQLite and
PostgreSQL: no marker of a student's IEP goals, accommodations or reading level (nor of a
lesson quoting them) is in the database's bytes; an erased student cannot be recovered
with any key that remains, while the other students of the same lessons stay readable, and
history, rebuild, verify, export and regeneration all go on."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from adapters.eventstore import event_log, open_ledger
from adapters.generators.template import TemplateGenerator
from adapters.keys.erasure import Erasures
from adapters.keys.sealing import sealer_of
from domain import LessonLedger
from projections.audit_trail import TrailFilter, export_line, trail
from projections.generation.port import GenerationRequest
from tests.support.projections import read_model, wait_until
from tests.support.stores import Store
from tests.support.student_data import (
    all_markers,
    database_bytes,
    everything_openable,
    generate,
    known_lessons,
    request,
)


@pytest.fixture
def lessons(ledger: LessonLedger) -> tuple[UUID, UUID]:
    """Two lessons: one for Ada and Ben, generated quoting both; one for Ben alone."""
    together = request(ledger, "08:30-09:00", "ada", "ben")
    generate(ledger, together, *all_markers("ada", "ben"))
    alone = request(ledger, "09:00-09:30", "ben")
    generate(ledger, alone, *all_markers("ben"))
    return together, alone


def erasures(ledger: LessonLedger, store: Store) -> Erasures:
    return Erasures(sealer_of(ledger), store.database)


def first_student(store: Store, lesson: UUID) -> Any:
    """A lesson's first student as the database holds them: opened by a new ledger, which
    holds no key in memory (None once erased)."""
    fresh = open_ledger(store.url)
    try:
        state = fresh.get_lesson(lesson)
        assert state is not None and state.students is not None
        return state.students[0]
    finally:
        fresh.close()


def test_no_student_detail_is_in_the_database(
    store: Store, ledger: LessonLedger, lessons: tuple[UUID, UUID]
) -> None:
    with read_model(store, ledger) as model:
        model.catch_up()  # the read model's copy of the content too
    dumped = database_bytes(store)
    assert b"student-ada" not in dumped and b"student-ben" not in dumped
    for marker in all_markers("ada", "ben"):
        assert marker.encode() not in dumped, marker
    # And yet the ledger reads them back for those who may.
    state = ledger.get_lesson(lessons[0])
    assert state is not None and state.students is not None
    assert [s["iep_goals"] for s in state.students if s] == [
        ["MARKER-ADA-IEP"],
        ["MARKER-BEN-IEP"],
    ]
    assert state.content is not None and "MARKER-ADA-IEP" in state.content["lesson"]["notes"]


def test_an_erased_student_cannot_be_recovered_with_any_key_that_remains(
    store: Store, ledger: LessonLedger, lessons: tuple[UUID, UUID]
) -> None:
    together, alone = lessons
    known_lessons(together, alone)
    before = everything_openable(store)
    assert b"MARKER-ADA-IEP" in before  # the attack works while the key exists

    done = erasures(ledger, store).erase_student("student-ada", actor="admin", reason="request")

    assert done is not None and done.keys == 1 and done.lessons == 1
    after = everything_openable(store)
    for marker in all_markers("ada"):
        assert marker.encode() not in after, marker
    assert b"MARKER-BEN-IEP" in after  # Ben's parts still open with Ben's keys
    state = ledger.get_lesson(together)
    assert state is not None and state.students is not None
    assert state.students[0] is None and state.students[1]["id"] == "student-ben"  # type: ignore[index]
    assert state.content is None  # made for Ada too: unreadable
    assert ledger.get_lesson(alone).content is not None  # type: ignore[union-attr]
    again = erasures(ledger, store).erase_student("student-ada", actor="admin", reason="again")
    assert (
        again is None
        and erasures(ledger, store).erase_student("nobody", actor="a", reason="r") is None
    )


def test_after_an_erasure_history_rebuild_verify_export_and_regeneration_go_on(
    store: Store, ledger: LessonLedger, lessons: tuple[UUID, UUID], tmp_path: Path
) -> None:
    together, alone = lessons
    erasures(ledger, store).erase_student("student-ada", actor="admin", reason="request")

    history = ledger.history(together)
    assert [e.event for e in history.entries] == ["OpenedByRequest", "LessonGenerated"]
    assert history.entries[0].changes["students"] == "2 student(s), 1 erased"
    generated = history.entries[1].changes
    assert generated["content"] is None and generated["content_erased"] is True
    kept = ledger.history(alone).entries  # Ben's own lesson: nothing of it erased
    assert kept[0].changes["students"] == "1 student(s)"
    assert kept[1].changes["content"] is not None and "content_erased" not in kept[1].changes
    assert ledger.history(together, as_of_version=1).state is not None
    with read_model(store, ledger) as model:
        model.catch_up()
        model.rebuild()
        assert model.verify().ok
    lines = [export_line(r) for r in trail(event_log(ledger), TrailFilter())]
    exported = "\n".join(lines)
    for marker in all_markers("ada", "ben"):
        assert marker not in exported
    assert all(json.loads(line)["data"].get("students") in (None, 1, 2) for line in lines)

    ledger.regenerate(lesson_id=together, request_id="again", actor="teacher")
    state = ledger.get_lesson(together)
    assert state is not None
    asked = GenerationRequest.from_state(state)
    assert len(asked.learners) == 1 and asked.learners[0].iep_goals == ("MARKER-BEN-IEP",)
    lesson = TemplateGenerator().build(asked)
    ledger.record_generation(
        lesson_id=together, attempt=state.attempt, content=lesson.content(), model="template-v1"
    )
    assert ledger.get_lesson(together).content is not None  # type: ignore[union-attr]


def test_an_erasure_that_cannot_be_recorded_erases_nothing(
    store: Store, ledger: LessonLedger
) -> None:
    lesson = request(ledger, "08:30-09:00", "ada")
    erasing = erasures(ledger, store)
    store.execute(f"DROP TABLE {erasing.log.positions}")  # say, a right not granted

    with pytest.raises(Exception, match="erasure_positions"):
        erasing.erase_student("student-ada", actor="admin", reason="request")

    assert first_student(store, lesson)["id"] == "student-ada"
    erasing = erasures(ledger, store)  # the table made again
    done = erasing.erase_student("student-ada", actor="admin", reason="request")
    assert done is not None and (done.keys, done.lessons) == (1, 1)
    assert [(e.kind, e.reason) for e in erasing.records()] == [("student", "request")]
    assert ledger.get_lesson(lesson).students == [None]  # type: ignore[union-attr]


def test_a_retention_run_that_cannot_be_recorded_erases_nothing(
    store: Store, ledger: LessonLedger
) -> None:
    old = request(ledger, "08:30-09:00", "ada", day="2024-01-15")
    erasing = erasures(ledger, store)
    store.execute(f"DROP TABLE {erasing.log.positions}")

    with pytest.raises(Exception, match="erasure_positions"):
        erasing.retention(date(2025, 1, 1), actor="retention", reason="daily")

    assert first_student(store, old)["id"] == "student-ada"
    erasing = erasures(ledger, store)  # the table made again
    done = erasing.retention(date(2025, 1, 1), actor="retention", reason="daily")
    assert done.keys == 31 and ledger.get_lesson(old).students == [None]  # type: ignore[union-attr]
    assert [(e.kind, e.keys) for e in erasing.records()] == [("retention", 31)]


def test_retention_erases_the_students_of_lessons_before_the_cut_off(
    store: Store, ledger: LessonLedger
) -> None:
    old = request(ledger, "08:30-09:00", "ada", day="2024-01-15")
    recent = request(ledger, "08:30-09:00", "ada", day="2025-09-08")

    # The keys of January 2024's 31 days were made together; those of September 2025 stay.
    dry = erasures(ledger, store).retention(
        date(2025, 1, 1), actor="admin", reason="policy", dry_run=True
    )
    assert dry.keys == 31 and ledger.get_lesson(old).students[0] is not None  # type: ignore[union-attr,index]

    done = erasures(ledger, store).retention(date(2025, 1, 1), actor="admin", reason="policy")

    assert done.keys == 31
    assert ledger.get_lesson(old).students == [None]  # type: ignore[union-attr]
    assert ledger.get_lesson(recent).students[0]["id"] == "student-ada"  # type: ignore[union-attr,index]
    assert [e.kind for e in erasures(ledger, store).records()] == ["retention"]


def test_a_student_erased_elsewhere_is_sealed_under_a_new_key_once_known(store: Store) -> None:
    """Ada's keys are kept by this ledger's sealer after her lessons; another process
    erases her. Once this one knows (told at once on PostgreSQL, after its short cache on
    SQLite) her next lesson is sealed under a new key, and reads back in a new ledger."""
    ours = store.open()
    keys = sealer_of(ours).keys
    keys.cache_seconds = 0.5
    if store.kind == "postgresql":
        wait_until(lambda: keys.told_of_erasures, 10, "the key erasure listener")
    request(ours, "08:00-08:30", "ada")
    request(ours, "08:30-09:00", "ada")  # her keys are found, and kept, again
    theirs = store.open()
    assert sealer_of(theirs).keys.destroy([sealer_of(theirs).student_owner("student-ada")])
    later = (  # on her lessons' day: that day's key is kept too
        f"{hour:02d}:{minute:02d}-{hour:02d}:{minute + 5:02d}"
        for hour in range(9, 18)
        for minute in range(0, 55, 5)
    )

    def sealed_anew() -> bool:
        return first_student(store, request(ours, next(later), "ada")) is not None

    wait_until(sealed_anew, 10, "a lesson of Ada's sealed under a key not destroyed")
