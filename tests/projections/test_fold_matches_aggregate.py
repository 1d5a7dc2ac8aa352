"""The read model's fold (projections/lessons.py) and the lesson slot aggregate
(domain/lesson.py) agree after every event, on SQLite and PostgreSQL.

The fold re-implements the aggregate's transitions for rebuild speed, so the rule lives
in two places; this test holds them together. Hypothesis draws command histories on a
few slots (requests with and without details, replays, conflicting requests, results
for the current, a stale and a not yet started attempt, results sent twice, regenerate,
cancel, legacy imports with and without content and colliding with live slots), runs
them through the ledger's public API, reads each touched slot's events back from the
store, and compares `fold`, applied event by event, with `row_from_state` of the
aggregate built from the same events by `event.mutate` (the library's mechanism).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from domain import LessonLedger, lesson_id_for
from domain.errors import DomainRejection, InvalidLessonRequest, LessonConflict, LessonNotFound
from domain.lesson import LessonSlot
from projections.lessons import LessonRow, differing_columns, fold, row_from_state

SCHOOL = "school-1"
DAY = "2025-09-05"
SCHEDULED = ("08:00-08:30", "08:30-09:00")
"""The scheduled slots a history plays on, as canonical time slots."""
SPELLED = {"08:00-08:30": "8:00-8:30", "08:30-09:00": "8:30 - 9:00"}
"""Another accepted spelling of each (a legacy row may spell its slot so)."""
ON_DEMAND = "on-demand-r-1"
"""An on-demand slot: what an on-demand request with request id r-1 claims, and what a
legacy row with this time slot lands on."""
TARGETS = (*SCHEDULED, ON_DEMAND)
"""The slots commands other than requests aim at: few, so that commands collide."""
REQUEST_IDS = ("r-1", "r-2", "r-3")
ACTORS = ("alice", "bob")
CONTENTS = ({"lesson": {"title": "Short vowels"}}, {"lesson": {"title": "Main idea"}})

Fold = Callable[[LessonRow | None, object], LessonRow]


# Commands, as hypothesis draws them (a failing example notes each one's repr).


@dataclass(frozen=True)
class Request:
    """A lesson request; on demand, it claims the slot `on-demand-<request_id>`."""

    slot: int  # index into SCHEDULED (ignored on demand)
    request_id: str
    actor: str
    details: dict[str, Any] | None
    on_demand: bool = False


@dataclass(frozen=True)
class Replay:
    """An earlier request of the history sent again, field for field."""

    which: int  # index into the requests sent so far (modulo their number)


@dataclass(frozen=True)
class Conflicting:
    """A request for a scheduled slot by another actor with a request id never used."""

    slot: int


@dataclass(frozen=True)
class Record:
    """A generation result or failure, for an attempt relative to the slot's current one."""

    result: Literal["generation", "failure"]
    target: int  # index into TARGETS
    attempt: Literal["current", "stale", "not_started"]
    twice: bool  # sent again right after (a worker retrying)
    content: int = 0


@dataclass(frozen=True)
class Regenerate:
    target: int
    request_id: str
    actor: str
    reason: str | None


@dataclass(frozen=True)
class Cancel:
    target: int
    request_id: str
    actor: str
    reason: str | None


@dataclass(frozen=True)
class LegacyRow:
    """A row of the old lessons table (see tests/test_import.py)."""

    target: int
    legacy_id: str
    content: Literal["json text", "object", "none", "empty object"]
    created_at: str | None
    updated_at: str | None
    spelled: bool = False


@dataclass(frozen=True)
class Import:
    rows: tuple[LegacyRow, ...]


Command = Request | Replay | Conflicting | Record | Regenerate | Cancel | Import

students = st.lists(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["st-1", "st-2"]), "grade": st.sampled_from([0, 3, 12])}
    ),
    min_size=1,
    max_size=2,
)
details = st.none() | st.fixed_dictionaries(
    {"students": students, "subject": st.sampled_from(["Reading", "Math"])}
)
reasons = st.sampled_from([None, "teacher asked", "wrong topic"])
legacy_rows = st.builds(
    LegacyRow,
    target=st.integers(0, len(TARGETS) - 1),
    legacy_id=st.sampled_from(["L1", "L2"]),
    content=st.sampled_from(["json text", "object", "none", "empty object"]),
    created_at=st.sampled_from([None, "2025-09-01T08:00:00"]),
    updated_at=st.sampled_from([None, "2025-09-01T08:05:00+00:00"]),
    spelled=st.booleans(),
)
requests = st.builds(
    Request,
    slot=st.integers(0, len(SCHEDULED) - 1),
    request_id=st.sampled_from(REQUEST_IDS),
    actor=st.sampled_from(ACTORS),
    details=details,
    on_demand=st.sampled_from([False, False, True]),
)
records = st.builds(
    Record,
    result=st.sampled_from(["generation", "failure"]),
    target=st.integers(0, len(TARGETS) - 1),
    attempt=st.sampled_from(["current", "current", "current", "stale", "not_started"]),
    twice=st.booleans(),
    content=st.integers(0, len(CONTENTS) - 1),
)
# Requests and results drawn more often than the rest (by repetition in `sampled_from`;
# `one_of` gives a repeated strategy no more weight), so that most commands meet a slot
# that exists and attempts get generated, failed, regenerated and cancelled.
weighted: list[st.SearchStrategy[Command]] = [
    requests,
    requests,
    requests,
    records,
    records,
    records,
    records,
    st.builds(Replay, which=st.integers(0, 10)),
    st.builds(Conflicting, slot=st.integers(0, len(SCHEDULED) - 1)),
    st.builds(
        Regenerate,
        target=st.integers(0, len(TARGETS) - 1),
        request_id=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
        reason=reasons,
    ),
    st.builds(
        Cancel,
        target=st.integers(0, len(TARGETS) - 1),
        request_id=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
        reason=reasons,
    ),
    st.builds(Import, rows=st.lists(legacy_rows, min_size=1, max_size=2).map(tuple)),
]
commands = st.sampled_from(weighted).flatmap(lambda strategy: strategy)
histories = st.lists(commands, min_size=8, max_size=30)


class History:
    """Runs commands on fresh slots of one ledger (a provider id of its own) and keeps
    which slots they touched."""

    def __init__(self, ledger: LessonLedger) -> None:
        self.ledger = ledger
        self.provider = str(uuid4())
        self.touched: dict[UUID, None] = {}  # in the order first touched
        self.requests: list[dict[str, Any]] = []
        self.fresh = itertools.count(1)

    def lesson_id(self, time_slot: str) -> UUID:
        lesson_id = lesson_id_for(self.provider, SCHOOL, DAY, time_slot)
        self.touched.setdefault(lesson_id)
        return lesson_id

    def run(self, command: Command) -> None:
        """Apply one command through the ledger's public API. The domain's answers
        (conflict, stale, idempotency mismatch, not found) are expected outcomes; an
        invalid-input answer only where the test means it (an attempt out of range);
        anything else fails the test."""
        try:
            self._run(command)
        except (DomainRejection, LessonNotFound) as answer:
            event(f"answer: {type(answer).__name__}")

    def _run(self, command: Command) -> None:
        ledger = self.ledger
        if isinstance(command, Request):
            slot = f"on-demand-{command.request_id}" if command.on_demand else None
            fields: dict[str, Any] = {
                "provider_id": self.provider,
                "school_id": SCHOOL,
                "lesson_date": DAY,
                "request_id": command.request_id,
                "actor": command.actor,
                "details": command.details,
            }
            if command.on_demand:
                fields["kind"] = "on_demand"
            else:
                fields["time_slot"] = SCHEDULED[command.slot]
            self.lesson_id(slot or SCHEDULED[command.slot])
            self.requests.append(fields)
            ledger.request_lesson(**fields)
        elif isinstance(command, Replay):
            if self.requests:
                ledger.request_lesson(**self.requests[command.which % len(self.requests)])
        elif isinstance(command, Conflicting):
            self.lesson_id(SCHEDULED[command.slot])
            ledger.request_lesson(
                provider_id=self.provider,
                school_id=SCHOOL,
                lesson_date=DAY,
                time_slot=SCHEDULED[command.slot],
                request_id=f"other-{next(self.fresh)}",
                actor="mallory",
            )
        elif isinstance(command, Record):
            self._record(command)
        elif isinstance(command, Regenerate):
            ledger.regenerate(
                lesson_id=self.lesson_id(TARGETS[command.target]),
                request_id=command.request_id,
                actor=command.actor,
                reason=command.reason,
            )
        elif isinstance(command, Cancel):
            ledger.cancel(
                lesson_id=self.lesson_id(TARGETS[command.target]),
                request_id=command.request_id,
                actor=command.actor,
                reason=command.reason,
            )
        else:
            result = ledger.import_lessons([self._legacy(row) for row in command.rows])
            for item in result.items:
                assert item.outcome != "invalid", f"the test drew an invalid row: {item.error}"
                event(f"import: {item.outcome}")

    def _record(self, command: Record) -> None:
        lesson_id = self.lesson_id(TARGETS[command.target])
        state = self.ledger.get_lesson(lesson_id)
        current = state.attempt if state else 1
        attempt = {"current": current, "stale": current - 1, "not_started": current + 1}[
            command.attempt
        ]
        for _ in range(2 if command.twice else 1):
            try:
                if command.result == "generation":
                    self.ledger.record_generation(
                        lesson_id=lesson_id,
                        attempt=attempt,
                        content=CONTENTS[command.content],
                        model="model-1",
                    )
                else:
                    self.ledger.record_failure(
                        lesson_id=lesson_id, attempt=attempt, reason="generator timed out"
                    )
            except InvalidLessonRequest:
                # Attempt 0, or one that has not started: refused before anything is written.
                assert command.attempt != "current"
                event("answer: InvalidLessonRequest")
            except (DomainRejection, LessonNotFound) as answer:
                event(f"answer: {type(answer).__name__}")

    def _legacy(self, row: LegacyRow) -> dict[str, Any]:
        time_slot = TARGETS[row.target]
        self.lesson_id(time_slot)
        content = {
            "json text": '{"lesson": {"title": "Legacy"}}',
            "object": {"lesson": {"title": "Legacy", "minutes": 30}},
            "none": None,
            "empty object": "{}",
        }[row.content]
        return {
            "id": row.legacy_id,
            "provider_id": self.provider,
            "school_id": SCHOOL,
            "lesson_date": DAY,
            "time_slot": SPELLED.get(time_slot, time_slot) if row.spelled else time_slot,
            "content": content,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }


def assert_fold_matches_aggregate(
    lesson_id: UUID, events: Sequence[LessonSlot.Event], fold: Fold = fold
) -> LessonSlot:
    """After every event, the fold's row is the row of the aggregate's state; returns the
    aggregate as the events built it."""
    row: LessonRow | None = None
    slot: LessonSlot | None = None
    seen: list[str] = []
    for each in events:
        seen.append(f"v{each.originator_version} {type(each).__name__}")
        row = fold(row, each)
        mutated = each.mutate(slot)
        assert isinstance(mutated, LessonSlot)
        slot = mutated
        expected = row_from_state(slot.state())
        assert row == expected, (
            f"lesson {lesson_id}: after {seen[-1]} the fold differs from the aggregate in "
            f"{differing_columns(expected, row)} (column: (aggregate, fold)); "
            f"events so far: {', '.join(seen)}"
        )
    assert slot is not None, f"lesson {lesson_id} has no events"
    return slot


def check_every_touched_slot(history: History) -> None:
    """Each touched slot's events, read back from the store, folded and replayed."""
    ledger = history.ledger
    for lesson_id in history.touched:
        events = ledger.slots.events(lesson_id)
        if not events:  # only commands that found no lesson aimed at it
            assert ledger.get_lesson(lesson_id) is None
            continue
        for each in events:
            event(f"event: {type(each).__name__}")
        slot = assert_fold_matches_aggregate(lesson_id, events)
        # The library's own replay of the slot (its repository) agrees with ours.
        assert ledger.readable(slot.state()) == ledger.get_lesson(lesson_id)


READING = {"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"}
CREATED, UPDATED = "2025-09-01T08:00:00", "2025-09-01T08:05:00+00:00"
EVERY_PATH: list[Command] = [
    Cancel(target=1, request_id="r-1", actor="bob", reason=None),  # no such lesson yet
    Request(slot=0, request_id="r-1", actor="alice", details=READING),
    Replay(which=0),  # replayed: nothing written
    Conflicting(slot=0),  # RequestRejected
    Request(slot=0, request_id="r-1", actor="alice", details=None),  # idempotency mismatch
    Record("generation", target=0, attempt="current", twice=True),  # generated, then replayed
    Record("failure", target=0, attempt="not_started", twice=False),  # invalid: not written
    Regenerate(target=0, request_id="r-2", actor="bob", reason="too long"),  # attempt 2
    Record("generation", target=0, attempt="stale", twice=False),  # stale: RequestRejected
    Record("failure", target=0, attempt="current", twice=True),  # failed, then replayed
    Cancel(target=0, request_id="r-3", actor="alice", reason=None),
    Record("generation", target=0, attempt="current", twice=False),  # cancelled: stale
    Conflicting(slot=0),  # the cancelled slot requested again: attempt 3
    Import((LegacyRow(0, "L1", "json text", CREATED, UPDATED),)),  # collides with slot 0
    Import(
        (
            LegacyRow(1, "L1", "object", CREATED, UPDATED, spelled=True),
            LegacyRow(1, "L2", "none", None, None),  # the same slot: duplicate in the batch
        )
    ),
    Import((LegacyRow(1, "L1", "object", CREATED, UPDATED),)),  # imported again: replayed
    Import((LegacyRow(2, "L2", "none", None, None),)),  # without content: requested
    Record("generation", target=2, attempt="current", twice=False),  # the imported attempt
    Request(slot=0, request_id="r-1", actor="bob", details=None, on_demand=True),  # conflict
    Regenerate(target=2, request_id="r-1", actor="bob", reason=None),  # regenerated import
]
"""Every command kind, reaching every event type and every answer, on every run."""


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=histories)
@example(history=EVERY_PATH)
def test_the_fold_equals_the_aggregate_after_every_event(
    ledger: LessonLedger, history: list[Command]
) -> None:
    # One ledger for every example (the `ledger` fixture); each example on a provider id
    # of its own, so its slots are new whatever earlier examples wrote.
    run = History(ledger)
    # Noted here as well: Hypothesis's own "Failing test case" line may not show it.
    note(f"provider {run.provider}; history:")
    for index, command in enumerate(history):
        note(f"  {index}: {command!r}")
    for command in history:
        run.run(command)
    check_every_touched_slot(run)


def test_a_slots_whole_life_folds_as_the_aggregate_replays_it(ledger: LessonLedger) -> None:
    """The property on one hand-written history: request, a conflicting request,
    generate, regenerate, fail, cancel, request again."""
    provider = str(uuid4())
    key = {"provider_id": provider, "school_id": SCHOOL, "lesson_date": DAY}
    first = ledger.request_lesson(
        **key,
        time_slot="08:30-09:00",
        request_id="r-1",
        actor="alice",
        details={"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"},
    )
    lesson_id = first.lesson_id
    with pytest.raises(LessonConflict):
        ledger.request_lesson(**key, time_slot="8:30-9:00", request_id="r-2", actor="bob")
    ledger.record_generation(lesson_id=lesson_id, attempt=1, content=CONTENTS[0], model="m-1")
    ledger.regenerate(lesson_id=lesson_id, request_id="r-3", actor="alice", reason="too long")
    ledger.record_failure(lesson_id=lesson_id, attempt=2, reason="generator timed out")
    ledger.cancel(lesson_id=lesson_id, request_id="r-4", actor="alice")
    ledger.request_lesson(**key, time_slot="08:30-09:00", request_id="r-5", actor="bob")

    events = ledger.slots.events(lesson_id)
    assert [type(e).__name__ for e in events] == [
        "OpenedByRequest",
        "RequestRejected",
        "LessonGenerated",
        "LessonRequested",
        "GenerationFailed",
        "LessonCancelled",
        "LessonRequested",
    ]
    rows: list[LessonRow] = []
    for each in events:
        rows.append(fold(rows[-1] if rows else None, each))
    assert [(r.status, r.attempt, r.request_id) for r in rows] == [
        ("requested", 1, "r-1"),
        ("requested", 1, "r-1"),
        ("generated", 1, "r-1"),
        ("requested", 2, "r-3"),
        ("failed", 2, "r-3"),
        ("cancelled", 2, "r-3"),
        ("requested", 3, "r-5"),
    ]
    slot = assert_fold_matches_aggregate(lesson_id, events)
    assert ledger.readable(slot.state()) == ledger.get_lesson(lesson_id)

    # And the check sees a fold that ignores any one of these transitions.
    for ignored in {type(e) for e in events} - {LessonSlot.OpenedByRequest}:
        with pytest.raises(AssertionError, match=rf"after v\d+ {ignored.__name__} the fold"):
            assert_fold_matches_aggregate(lesson_id, events, fold=_ignoring(ignored))


def _ignoring(ignored: type) -> Fold:
    """The fold, but leaving the row as it was on events of the `ignored` type."""

    def broken(row: LessonRow | None, each: object) -> LessonRow:
        if row is not None and type(each) is ignored:
            return row
        return fold(row, each)

    return broken
