"""The event classes against their schema snapshot (tests/events/schema.json) and their
catalogue (docs/events.md): a stored field changed without a new version fails here."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from domain.lesson import LessonSlot
from tests.support.event_schema import (
    CATALOGUE,
    catalogue,
    check,
    event_classes,
    load,
    recorded,
)


def test_every_stored_event_class_matches_its_recorded_version() -> None:
    assert check(event_classes(), load()) == []


def test_the_catalogue_is_the_one_the_code_makes() -> None:
    assert CATALOGUE.read_text() == catalogue(event_classes(), load()), (
        "docs/events.md is out of date: run `make event-schema`"
    )


# Stand-ins for an event class before and after a change, to test the check itself.


class Before(LessonSlot.Event):
    """An event as first written."""

    class_version = 1
    attempt: int


class Widened(LessonSlot.Event):
    """The same event with a field added, and no new version."""

    class_version = 1
    attempt: int
    usage: dict[str, int] | None


class Bumped(LessonSlot.Event):
    """The same event with a field added, a new version, and its upcaster."""

    class_version = 2
    attempt: int
    usage: dict[str, int] | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Added `usage` (None for events written before)."""
        state["usage"] = None


class BumpedWithoutUpcaster(LessonSlot.Event):
    class_version = 2
    attempt: int
    usage: dict[str, int] | None


def as_if(cls: type, earlier: type) -> dict[str, Any]:
    """A snapshot that recorded `earlier` under `cls`'s topic (the class before the change)."""
    snapshot = recorded([earlier], {})
    return {get_topic(cls): snapshot[get_topic(earlier)]}


def test_a_field_added_without_a_new_version_fails_the_check() -> None:
    problems = check([Widened], as_if(Widened, Before))

    assert len(problems) == 1
    assert "+usage" in problems[0] and "class_version = 2" in problems[0]
    assert "upcast_v1_v2" in problems[0]


def test_recording_cannot_hide_a_changed_version() -> None:
    snapshot = recorded([Widened], as_if(Widened, Before))  # what `make event-schema` does
    assert check([Widened], snapshot) != []


def test_a_new_version_with_its_upcaster_passes_once_recorded() -> None:
    snapshot = as_if(Bumped, Before)
    assert "not in the schema snapshot" in check([Bumped], snapshot)[0]
    assert check([Bumped], recorded([Bumped], snapshot)) == []


def test_a_new_version_needs_its_upcaster() -> None:
    snapshot = recorded([BumpedWithoutUpcaster], as_if(BumpedWithoutUpcaster, Before))
    assert check([BumpedWithoutUpcaster], snapshot) == [
        f"{get_topic(BumpedWithoutUpcaster)} has no upcast_v1_v2"
    ]


def test_a_removed_event_class_fails_the_check() -> None:
    snapshot = recorded([Before, Bumped], {})
    problems = check([Before], snapshot)
    assert any(get_topic(Bumped) in p and "no longer in the code" in p for p in problems)
