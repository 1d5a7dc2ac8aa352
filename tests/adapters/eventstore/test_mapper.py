"""The ledger's event mapper (adapters/event_mapper.py): orjson for the lesson slot's
events, in the library's format.

- Every event of a slot's life, written by the ledger, is stored byte for byte as the
  library's own mapper stores it, and each mapper reads what the other wrote.
- Any plain JSON payload (hypothesis) reads back as it was written, whichever mapper
  wrote or reads it.
- What orjson would read differently goes the library's way: a typed value below the
  top level, a number beyond 64 bits, NaN; and so do other aggregates' events.
- Payloads that are not plain JSON are refused with the command, nothing written.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Mapper, StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.eventstore import event_store, open_ledger
from adapters.eventstore.mapper import LedgerMapper
from domain import InvalidLessonRequest, LessonLedger
from domain.lesson import LessonSlot

REQUEST = {
    "provider_id": "8f14e45f-ceea-467f-a8f5-3f6c2a4b8d10",
    "school_id": "school-1",
    "lesson_date": "2025-09-05",
    "time_slot": "8:30-9:00",
    "details": {"students": [{"id": "st-1", "grade": 3, "iepGoals": ["Reads 🐈 à l'aise"]}],
                "subject": "Reading", "duration": 30},
}  # fmt: skip
CONTENT = {"lesson": {"title": "Main idea", "minutes": 30, "ratio": 0.25}, "worksheet": None}


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    opened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened
    opened.close()


def _library(mapper: Any) -> Mapper[uuid.UUID]:
    """The library's own mapper, with the ledger's transcoder (the same registrations)."""
    return Mapper(mapper.transcoder)


def _live_slot(ledger: LessonLedger) -> list[StoredEvent]:
    """A slot through its whole life, and a rejected request: its stored events."""
    first = ledger.request_lesson(**REQUEST, request_id="r-1", actor="teacher-1")
    lesson_id = first.lesson_id
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENT, model="m-1")
    with pytest.raises(Exception, match="held"):
        ledger.request_lesson(**REQUEST, request_id="r-2", actor="teacher-2")
    ledger.regenerate(lesson_id=lesson_id, request_id="r-3", actor="teacher-1", reason="again")
    ledger.record_failure(lesson_id=lesson_id, attempt=2, reason="the model timed out")
    ledger.cancel(lesson_id=lesson_id, request_id="r-4", actor="teacher-1", reason=None)
    ledger.request_lesson(**REQUEST, request_id="r-5", actor="teacher-3")
    ledger.import_lessons(
        [{"id": "legacy-7", "provider_id": REQUEST["provider_id"], "school_id": "school-2",
          "lesson_date": "2025-09-05", "time_slot": "08:00", "content": '{"lesson": {"t": 1}}',
          "created_at": "2025-01-02T03:04:05", "updated_at": None}]
    )  # fmt: skip
    return list(event_store(ledger).recorder.select_notifications(None, 100))


def test_the_ledger_stores_its_events_as_the_library_would(ledger: LessonLedger) -> None:
    mapper = event_store(ledger).mapper
    assert type(mapper) is LedgerMapper
    library = _library(mapper)
    stored = _live_slot(ledger)
    topics = {s.topic.rsplit(".", 1)[-1] for s in stored}
    assert topics >= {
        "OpenedByRequest", "LessonGenerated", "RequestRejected", "LessonRequested",
        "GenerationFailed", "LessonCancelled", "Opened", "LessonImported",
    }  # fmt: skip
    for record in stored:
        ours, theirs = mapper.to_domain_event(record), library.to_domain_event(record)
        assert type(ours) is type(theirs) and vars(ours) == vars(theirs)
        assert mapper.to_stored_event(theirs).state == record.state
        assert library.to_stored_event(ours).state == record.state


def _generated(content: dict[str, Any]) -> LessonSlot.LessonGenerated:
    """A LessonGenerated event holding `content`, as the worker's command records it."""
    # The class is made by the library's `@event` decorator: mypy sees none of its fields.
    return LessonSlot.LessonGenerated(  # type: ignore[call-arg]
        originator_id=uuid.uuid4(),
        originator_version=3,
        timestamp=datetime.now(UTC),
        request_id="r-1",
        actor="worker",
        correlation_id=None,
        source="worker",
        as_sent=None,
        attempt=1,
        content=content,
        model="m-1",
    )


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.dictionaries(st.text(), _JSON, min_size=1, max_size=5))
def test_any_plain_json_payload_reads_back_as_written(
    ledger: LessonLedger, content: dict[str, Any]
) -> None:
    mapper = event_store(ledger).mapper
    library = _library(mapper)
    generated = _generated(content)
    for writer in (mapper, library):
        stored = writer.to_stored_event(generated)
        for reader in (mapper, library):
            assert vars(reader.to_domain_event(stored)) == vars(generated)


def _stored_by_library(ledger: LessonLedger, content: dict[str, Any]) -> StoredEvent:
    return _library(event_store(ledger).mapper).to_stored_event(_generated(content))


@pytest.mark.parametrize(
    "content",
    [
        {"lesson": {"at": datetime(2025, 9, 5, 8, 30, tzinfo=UTC)}},  # a tag below the top
        {"lesson": {"id": uuid.UUID(int=7)}},
        {"count": 2**64, "bigger": -(10**30)},  # orjson would read these as floats
        {"score": float("nan")},  # the library writes NaN, orjson does not read it
        {"meta": {"_type_": "note", "kind": 2}},  # a key like the transcoder's tag
    ],
    ids=["nested datetime", "nested uuid", "beyond 64 bits", "nan", "tag-like keys"],
)
def test_what_orjson_would_read_differently_is_read_by_the_library(
    ledger: LessonLedger, content: dict[str, Any]
) -> None:
    stored = _stored_by_library(ledger, content)
    ours = event_store(ledger).mapper.to_domain_event(stored)
    theirs = _library(event_store(ledger).mapper).to_domain_event(stored)
    assert repr(vars(ours)) == repr(vars(theirs))  # repr: nan == nan, int is not float
    assert repr(ours.content) == repr(content)  # type: ignore[attr-defined]


class Note(Aggregate):
    """Another aggregate's events: not the ledger's, so the library's own way."""

    @event("Written")
    def __init__(self, text: str, amount: Decimal) -> None:
        self.text, self.amount = text, amount


def test_other_aggregates_events_go_the_librarys_way(ledger: LessonLedger) -> None:
    note = Note("hello", Decimal("1.50"))
    (written,) = note.collect_events()
    stored = event_store(ledger).mapper.to_stored_event(written)
    assert stored.state == _library(event_store(ledger).mapper).to_stored_event(written).state
    assert vars(event_store(ledger).mapper.to_domain_event(stored)) == vars(written)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"lesson": {"id": uuid.UUID(int=7)}}, "must be plain JSON, not hold a UUID value"),
        ({"lesson": {"minutes": float("inf")}}, "must be plain JSON: no NaN or infinite numbers"),
        ({"lesson": [Decimal("1.5")]}, "must be plain JSON, not hold a Decimal value"),
    ],
)
def test_generated_content_that_is_not_plain_json_is_refused(
    ledger: LessonLedger, content: dict[str, Any], message: str
) -> None:
    first = ledger.request_lesson(**REQUEST, request_id="r-1", actor="teacher-1")
    before = event_store(ledger).recorder.max_notification_id()
    with pytest.raises(InvalidLessonRequest) as refused:
        ledger.record_generation(lesson_id=first.lesson_id, attempt=1, content=content, model="m")
    assert refused.value.errors == [{"field": "content", "message": message}]
    assert event_store(ledger).recorder.max_notification_id() == before


class Graded(LessonSlot.Event):
    """An event class at its second version (as first written: no `scale`)."""

    class_version = 2
    attempt: int
    scale: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["scale"] = "default"


def _graded(**state: Any) -> Graded:
    return Graded(  # type: ignore[call-arg]  # the base's fields, as for _generated
        originator_id=uuid.uuid4(),
        originator_version=2,
        timestamp=datetime.now(UTC),
        request_id="r-1",
        actor="worker",
        correlation_id=None,
        source="worker",
        as_sent=None,
        **state,
    )


def test_a_versioned_event_is_written_and_read_as_the_library_does(ledger: LessonLedger) -> None:
    mapper = event_store(ledger).mapper
    library = _library(mapper)
    graded = _graded(attempt=1, scale="k-12")

    stored = mapper.to_stored_event(graded)

    assert stored.state == library.to_stored_event(graded).state
    assert b'"class_version":2' in stored.state
    assert vars(mapper.to_domain_event(stored)) == vars(graded)


def test_an_older_version_is_upcast_on_reading_by_either_mapper(ledger: LessonLedger) -> None:
    mapper = event_store(ledger).mapper
    first_version = _library(mapper).to_stored_event(_graded(attempt=1, scale="k-12"))
    # As version 1 stored it: no `scale`, no class_version.
    state = first_version.state.replace(b',"class_version":2', b"").replace(b',"scale":"k-12"', b"")
    old = StoredEvent(first_version.originator_id, 2, first_version.topic, state)

    ours, theirs = mapper.to_domain_event(old), _library(mapper).to_domain_event(old)

    assert vars(ours) == vars(theirs)
    assert ours.scale == "default"  # type: ignore[attr-defined]
