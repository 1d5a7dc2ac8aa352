"""Every row of the design's command table, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain import (
    IdempotencyMismatch,
    InvalidLessonRequest,
    LessonConflict,
    LessonLedger,
    LessonNotFound,
    StaleGeneration,
    lesson_id_for,
)
from domain.commands import validate_request
from domain.fingerprint import Fingerprint
from domain.lesson import LessonSlot
from domain.sealed import plain_parts
from domain.state import Metadata
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
DETAILS = {
    "students": [{"id": "st-1", "grade": 3, "iepGoals": ["decode CVC words"]}],
    "subject": "Reading",
    "subjectType": "ela",
    "teacherRole": "resource",
    "topic": "short vowels",
    "duration": 30,
}
CONTENT = {"lesson": {"title": "Short vowels"}, "worksheet": {}, "metadata": {}}


def request(ledger: LessonLedger, request_id: str = "r-1", actor: str = "alice", **changes: Any):  # type: ignore[no-untyped-def]
    fields: dict[str, Any] = {
        "provider_id": PROVIDER,
        "school_id": "school-1",
        "lesson_date": "2025-09-05",
        "time_slot": "08:30-09:00",
        "request_id": request_id,
        "actor": actor,
        "details": DETAILS,
        **changes,
    }
    return ledger.request_lesson(**fields)


def events_of(ledger: LessonLedger, lesson_id: UUID) -> list[str]:
    return [entry.event for entry in ledger.history(lesson_id).entries]


def test_a_request_for_a_new_slot_is_accepted_as_attempt_1(ledger: LessonLedger) -> None:
    result = request(ledger, correlation_id="batch-7", source="cli")

    assert result.outcome == "accepted"
    assert result.attempt == 1
    assert result.lesson_id == lesson_id_for(PROVIDER, "school-1", "2025-09-05", "8:30-9:00")
    assert isinstance(result.position, int)
    lesson = ledger.get_lesson(result.lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.attempt, lesson.request_id) == ("requested", 1, "r-1")
    assert (lesson.requested_by, lesson.correlation_id) == ("alice", "batch-7")
    assert lesson.details is not None and lesson.details["subject"] == "Reading"
    # One event opens the slot and records the request, as version 1.
    [requested] = ledger.history(result.lesson_id).entries
    assert (requested.event, requested.version) == ("OpenedByRequest", 1)
    assert requested.changes["attempt"] == 1
    assert (requested.request_id, requested.actor) == ("r-1", "alice")
    assert (requested.correlation_id, requested.source) == ("batch-7", "cli")
    assert isinstance(requested.recorded_at, datetime)


def test_students_are_kept_apart_from_the_other_details(ledger: LessonLedger) -> None:
    result = request(ledger)
    lesson = ledger.get_lesson(result.lesson_id)
    assert lesson is not None
    assert lesson.students == [
        {
            "id": "st-1",
            "grade": 3,
            "reading_level": None,
            "iep_goals": ["decode CVC words"],
            "accommodations": None,
        }
    ]
    assert lesson.details is not None and "students" not in lesson.details
    assert "decode CVC words" not in str(lesson.details)


def test_the_same_request_again_is_replayed_and_writes_nothing(
    ledger: LessonLedger, store: Store
) -> None:
    first = request(ledger)
    written = store.count_events()

    again = request(ledger, time_slot="8:30 - 9:00")

    assert (again.outcome, again.attempt, again.position) == ("replayed", 1, None)
    assert again.lesson_id == first.lesson_id
    assert store.count_events() == written


def test_different_details_under_the_same_request_id_is_an_idempotency_mismatch(
    ledger: LessonLedger,
) -> None:
    first = request(ledger)

    with pytest.raises(IdempotencyMismatch, match="r-1"):
        request(ledger, details={**DETAILS, "topic": "long vowels"})

    rejected = ledger.history(first.lesson_id).entries[-1]
    assert rejected.event == "RequestRejected"
    assert rejected.changes["reason"] == "idempotency_mismatch"
    assert ledger.get_lesson(first.lesson_id).status == "requested"  # type: ignore[union-attr]


def test_the_opening_event_is_whole_as_its_constructor_would_build_it() -> None:
    """`first_request` sets the event's fields at once, as the library's mapper does."""
    command = validate_request(
        provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-05",
        time_slot="08:30-09:00", request_id="r-1", actor="alice", details=DETAILS,
    )  # fmt: skip
    printed = Fingerprint.of("request", "alice", command.details, command.students)
    opened = LessonSlot.first_request(
        command.key, Metadata("r-1", "alice"), command.details, command.students, printed
    )
    assert opened == type(opened)(**vars(opened))
    fields = {f.name for f in dataclasses.fields(opened)}
    assert set(vars(opened)) == fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        opened.attempt = 2
    slot = opened.mutate(None)
    assert slot is not None and slot.state().status == "requested"


def test_a_request_recorded_by_the_first_release_is_still_replayed(
    ledger: LessonLedger, store: Store
) -> None:
    """Events written before the fingerprint's second recipe hold a digest made the
    first way (sorted json.dumps): the same request again is still a replay, and other
    details under its request id still a mismatch."""
    opened, printed = _opened_as_recorded(key=None)
    first = printed.first_recipe
    assert opened.fingerprint.startswith("2:") and not first.startswith("2:")
    # The library makes its events dataclasses: mypy sees none of their fields there.
    as_recorded = dataclasses.replace(opened, fingerprint=first)  # type: ignore[call-arg]
    _replayed_then_mismatched(ledger, store, as_recorded)


def test_a_request_recorded_under_the_first_keyed_recipe_is_still_replayed(
    ledger: LessonLedger, store: Store
) -> None:
    """Events written before the keyed BLAKE2b recipe hold a `3:` print (HMAC-SHA256 of
    the SHA-256, under the same key): the same request again is still a replay, and other
    details under its request id still a mismatch."""
    opened, printed = _opened_as_recorded(key=ledger.student_data.print_key)
    earlier = printed.hmac_recipe
    assert opened.fingerprint.startswith("4:")
    assert earlier is not None and earlier.startswith("3:")
    as_recorded = dataclasses.replace(opened, fingerprint=earlier)  # type: ignore[call-arg]
    _replayed_then_mismatched(ledger, store, as_recorded)


def _opened_as_recorded(
    key: bytes | None,
) -> tuple[LessonSlot.OpenedByRequest, Fingerprint]:
    """`request(ledger)`'s opening event as an earlier release wrote it (its students'
    parts in plain text, see domain/sealed.py), and its print under `key`."""
    command = validate_request(
        provider_id=PROVIDER, school_id="school-1", lesson_date="2025-09-05",
        time_slot="08:30-09:00", request_id="r-1", actor="alice", details=DETAILS,
    )  # fmt: skip
    by = Metadata(command.request_id, command.actor)
    printed = Fingerprint.of("request", "alice", command.details, command.students, key=key)
    parts = plain_parts(command.students)
    return LessonSlot.first_request(command.key, by, command.details, parts, printed), printed


def _replayed_then_mismatched(
    ledger: LessonLedger, store: Store, opened: LessonSlot.OpenedByRequest
) -> None:
    ledger.slots.save(opened)
    written = store.count_events()

    again = request(ledger)
    assert (again.outcome, again.attempt) == ("replayed", 1)
    assert store.count_events() == written
    with pytest.raises(IdempotencyMismatch, match="r-1"):
        request(ledger, details={**DETAILS, "topic": "long vowels"})


def test_another_request_for_a_held_slot_is_a_conflict_naming_the_holder(
    ledger: LessonLedger,
) -> None:
    first = request(ledger)

    with pytest.raises(LessonConflict) as raised:
        request(ledger, request_id="r-2", actor="bob", time_slot="8:30-9:00")

    holder = raised.value.holder
    assert holder is not None
    assert (holder.request_id, holder.actor, holder.status, holder.attempt) == (
        "r-1",
        "alice",
        "requested",
        1,
    )
    assert "r-1" in str(raised.value) and "alice" in str(raised.value)
    # The loser's attempt is part of the slot's history: who, when, why, request id.
    rejected = ledger.history(first.lesson_id).entries[-1]
    assert rejected.event == "RequestRejected"
    assert (rejected.request_id, rejected.actor) == ("r-2", "bob")
    assert rejected.changes["reason"] == "conflict"
    assert rejected.changes["holder_request_id"] == "r-1"
    assert rejected.recorded_at >= holder.requested_at
    # Sent again (a client's retry), it is the same conflict, kept once.
    with pytest.raises(LessonConflict, match="'r-1' by 'alice'"):
        request(ledger, request_id="r-2", actor="bob", time_slot="8:30-9:00")
    assert events_of(ledger, first.lesson_id) == ["OpenedByRequest", "RequestRejected"]


def test_recording_the_generation_of_the_current_attempt(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id

    result = ledger.record_generation(
        lesson_id=lesson_id, attempt=1, content=CONTENT, model="template"
    )

    assert (result.outcome, result.attempt) == ("accepted", 1)
    lesson = ledger.get_lesson(lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.content, lesson.model) == ("generated", CONTENT, "template")
    assert lesson.generated_at is not None
    generated = ledger.history(lesson_id).entries[-1]
    assert (generated.event, generated.source, generated.request_id) == (
        "LessonGenerated",
        "worker",
        "r-1",
    )


def test_the_same_result_again_is_replayed(ledger: LessonLedger, store: Store) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="template")
    written = store.count_events()

    again = ledger.record_generation(
        lesson_id=lesson_id, attempt=1, content=CONTENT, model="template"
    )
    failure_after = ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="timeout")

    assert (again.outcome, again.position) == ("replayed", None)
    assert failure_after.outcome == "replayed"
    assert store.count_events() == written
    assert ledger.get_lesson(lesson_id).status == "generated"  # type: ignore[union-attr]


def test_recording_a_failure_of_the_current_attempt(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id

    result = ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="model timed out")

    assert result.outcome == "accepted"
    lesson = ledger.get_lesson(lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.failure_reason) == ("failed", "model timed out")
    assert ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="x").outcome == "replayed"


@pytest.mark.parametrize("first_result", ["generated", "failed"])
def test_regenerate_starts_the_next_attempt(ledger: LessonLedger, first_result: str) -> None:
    lesson_id = request(ledger).lesson_id
    if first_result == "generated":
        ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")
    else:
        ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="boom")

    result = ledger.regenerate(
        lesson_id=lesson_id, request_id="r-regen", actor="alice", reason="too hard"
    )

    assert (result.outcome, result.attempt) == ("accepted", 2)
    lesson = ledger.get_lesson(lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.attempt, lesson.request_id) == ("requested", 2, "r-regen")
    assert lesson.content is None and lesson.failure_reason is None
    assert lesson.details is not None and lesson.details["topic"] == "short vowels"
    assert ledger.history(lesson_id).entries[-1].changes["reason"] == "too hard"
    replay = ledger.regenerate(
        lesson_id=lesson_id, request_id="r-regen", actor="alice", reason="too hard"
    )
    assert (replay.outcome, replay.attempt) == ("replayed", 2)


def test_a_generation_for_the_attempt_before_a_regeneration_is_stale(
    ledger: LessonLedger,
) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="boom")
    ledger.regenerate(lesson_id=lesson_id, request_id="r-regen", actor="alice")

    with pytest.raises(StaleGeneration) as raised:
        ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")

    assert (raised.value.attempt, raised.value.current_attempt) == (1, 2)
    with pytest.raises(StaleGeneration):
        ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="late failure")
    lesson = ledger.get_lesson(lesson_id)
    assert lesson is not None and (lesson.status, lesson.attempt) == ("requested", 2)
    stale = [e for e in ledger.history(lesson_id).entries if e.event == "RequestRejected"]
    assert [e.changes["reason"] for e in stale] == ["stale", "stale"]
    assert [e.changes["command"] for e in stale] == ["record_generation", "record_failure"]


def test_a_result_for_an_attempt_that_never_started_is_invalid(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id
    with pytest.raises(InvalidLessonRequest) as raised:
        ledger.record_generation(lesson_id=lesson_id, attempt=2, content=CONTENT, model="m")
    assert raised.value.errors[0]["field"] == "attempt"


def test_regenerate_while_requested_is_a_conflict(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id
    with pytest.raises(LessonConflict) as raised:
        ledger.regenerate(lesson_id=lesson_id, request_id="r-regen", actor="bob")
    assert raised.value.holder is not None and raised.value.holder.status == "requested"


@pytest.mark.parametrize("state", ["requested", "generated", "failed"])
def test_cancel_frees_the_slot(ledger: LessonLedger, state: str) -> None:
    lesson_id = request(ledger).lesson_id
    if state == "generated":
        ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")
    if state == "failed":
        ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="boom")

    result = ledger.cancel(lesson_id=lesson_id, request_id="r-cancel", actor="alice", reason="sick")

    assert result.outcome == "accepted"
    lesson = ledger.get_lesson(lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.cancel_reason) == ("cancelled", "sick")
    again = ledger.cancel(lesson_id=lesson_id, request_id="r-cancel", actor="alice", reason="sick")
    assert again.outcome == "replayed"


def test_cancelling_a_cancelled_lesson_is_a_conflict(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.cancel(lesson_id=lesson_id, request_id="r-cancel", actor="alice")
    with pytest.raises(LessonConflict):
        ledger.cancel(lesson_id=lesson_id, request_id="r-cancel-2", actor="bob")
    with pytest.raises(LessonConflict):
        ledger.regenerate(lesson_id=lesson_id, request_id="r-regen", actor="bob")


def test_a_generation_arriving_after_cancel_is_stale(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.cancel(lesson_id=lesson_id, request_id="r-cancel", actor="alice")
    with pytest.raises(StaleGeneration, match="cancelled"):
        ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")
    assert ledger.get_lesson(lesson_id).status == "cancelled"  # type: ignore[union-attr]


def test_cancel_then_request_again_appends_the_next_attempt(ledger: LessonLedger) -> None:
    first = request(ledger)
    ledger.cancel(lesson_id=first.lesson_id, request_id="r-cancel", actor="alice")

    second = request(ledger, request_id="r-2", actor="bob", time_slot="08:30\u201309:00")

    assert second.lesson_id == first.lesson_id
    assert (second.outcome, second.attempt) == ("accepted", 2)
    lesson = ledger.get_lesson(first.lesson_id)
    assert lesson is not None
    assert (lesson.status, lesson.request_id, lesson.requested_by) == ("requested", "r-2", "bob")
    assert events_of(ledger, first.lesson_id) == [
        "OpenedByRequest",
        "LessonCancelled",
        "LessonRequested",
    ]
    # The first request, retried late with its own request id, changes nothing.
    late = request(ledger)
    assert (late.outcome, late.attempt) == ("replayed", 1)


def test_commands_on_an_unknown_lesson_say_not_found(ledger: LessonLedger) -> None:
    unknown = uuid4()
    assert ledger.get_lesson(unknown) is None
    with pytest.raises(LessonNotFound):
        ledger.record_generation(lesson_id=unknown, attempt=1, content=CONTENT, model="m")
    with pytest.raises(LessonNotFound):
        ledger.record_failure(lesson_id=unknown, attempt=1, reason="x")
    with pytest.raises(LessonNotFound):
        ledger.regenerate(lesson_id=unknown, request_id="r", actor="a")
    with pytest.raises(LessonNotFound):
        ledger.cancel(lesson_id=unknown, request_id="r", actor="a")
    with pytest.raises(LessonNotFound):
        ledger.history(unknown)


def test_invalid_input_names_every_field_and_writes_nothing(
    ledger: LessonLedger, store: Store
) -> None:
    request(ledger)
    written = store.count_events()

    with pytest.raises(InvalidLessonRequest) as raised:
        ledger.request_lesson(
            provider_id="not-a-uuid",
            school_id=None,
            lesson_date="2025-02-30",
            time_slot="structured",
            request_id="",
            actor=" ",
            details={"students": [{"id": "s", "grade": 13, "name": "Ann"}], "duration": 500},
        )

    fields = {error["field"] for error in raised.value.errors}
    assert fields == {
        "provider_id",
        "school_id",
        "lesson_date",
        "time_slot",
        "request_id",
        "actor",
        "details.students.0.grade",
        "details.students.0.name",
        "details.subject",
        "details.duration",
    }
    messages = {error["field"]: error["message"] for error in raised.value.errors}
    assert "by id only" in messages["details.students.0.name"]
    assert store.count_events() == written


def test_on_demand_lessons_share_a_provider_school_and_date(ledger: LessonLedger) -> None:
    first = request(ledger, request_id="od-1", kind="on_demand", time_slot=None)
    second = request(ledger, request_id="od-2", kind="on_demand", time_slot=None)

    assert first.outcome == second.outcome == "accepted"
    assert first.lesson_id != second.lesson_id
    lesson = ledger.get_lesson(first.lesson_id)
    assert lesson is not None
    assert (lesson.kind, lesson.time_slot) == ("on_demand", "on-demand-od-1")


def test_history_as_of_a_version_shows_the_state_as_it_was(ledger: LessonLedger) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")
    ledger.cancel(lesson_id=lesson_id, request_id="r-cancel", actor="alice")

    then = ledger.history(lesson_id, as_of_version=2)
    now = ledger.history(lesson_id)

    assert [e.event for e in then.entries] == ["OpenedByRequest", "LessonGenerated"]
    assert then.state is not None and then.state.status == "generated"
    assert now.state is not None and now.state.status == "cancelled"
    as_of = ledger.history(lesson_id, as_of=then.entries[-1].recorded_at)
    assert as_of.state is not None and as_of.state.status == "generated"


def test_details_over_128_kib_are_refused_naming_details(
    ledger: LessonLedger, store: Store
) -> None:
    goals = ["g" * 2000] * 20
    huge = {
        **DETAILS,
        "students": [{"id": f"s{i}", "grade": 3, "iepGoals": goals} for i in range(4)],
    }
    with pytest.raises(InvalidLessonRequest) as raised:
        request(ledger, details=huge)
    assert [e["field"] for e in raised.value.errors] == ["details"]
    assert "at most 131072" in raised.value.errors[0]["message"]
    assert store.count_events() == 0


def test_history_as_of_a_version_beyond_64_bits_is_the_whole_history(
    ledger: LessonLedger,
) -> None:
    lesson_id = request(ledger).lesson_id
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m")

    # Up to a version no slot reaches: every event (SQLite raised OverflowError: a 500).
    history = ledger.history(lesson_id, as_of_version=10**30)

    assert [e.event for e in history.entries] == ["OpenedByRequest", "LessonGenerated"]
    assert history.state is not None and history.state.status == "generated"
