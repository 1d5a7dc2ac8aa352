"""Upcasting's cost: catch-up and rebuild of a log written entirely in the oldest
version, against the run's own log of the current version, at the same size.

The oldest log is the first release's `OpenedByRequest`, byte for byte as that release
stored it (the event corpus of tests/events/corpus/, its first release), once per
lesson of the run's population with the key, request id and timestamp of that lesson,
written through the recorder. Its students' part is plain text, as that release wrote
it; reading it goes through every upcaster to the current version. The oldest log's
catch-up is compared with the run's catch-up of its own log (the current version, a
minute before); then the two logs are rebuilt `rounds` times each, taking turns, and a
side's rebuild is its median round.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from benchmarks import reads
from benchmarks.reads import LESSONS_PER_PROVIDER, POPULATION
from benchmarks.stores import StoreSpec
from benchmarks.workload import requests

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "events" / "corpus"
TOPIC = "domain.lesson:LessonSlot.OpenedByRequest"
WRITE_PAGE = 2000


@dataclass(frozen=True)
class Compared:
    """Catch-up rates and rebuild rates (events/s) of the current and the oldest log."""

    oldest_release: str
    catchup: dict[str, float]
    rebuild: dict[str, list[float]]

    def ratio(self, measure: str) -> float:
        """The oldest log's rate over the current one's (1.0: as fast)."""
        if measure == "catchup":
            return self.catchup["oldest"] / self.catchup["current"]
        medians = {side: statistics.median(rates) for side, rates in self.rebuild.items()}
        return medians["oldest"] / medians["current"]


def measure(
    current: StoreSpec, current_catchup: float, oldest: StoreSpec, lessons: int, rounds: int,
    step: Callable[[str], None],
) -> Compared:  # fmt: skip
    """`current` holds the run's population, caught up at `current_catchup` events/s;
    `oldest` is empty and gets the same lessons in the oldest release's format."""
    release, template = oldest_opening()
    step(f"upcasting: writing {lessons:,} events as release {release} stored them")
    write_oldest(oldest, template, lessons)
    step("upcasting: catch-up of the oldest log")
    catchup = {"current": current_catchup, "oldest": reads.catch_up(oldest).per_second}
    rebuild: dict[str, list[float]] = {"current": [], "oldest": []}
    for number in range(rounds):
        for side, spec in (("oldest", oldest), ("current", current))[:: 1 - 2 * (number % 2)]:
            step(f"upcasting: rebuild of the {side} log, round {number + 1}")
            rebuild[side].append(reads.rebuild(spec).per_second)
    return Compared(release, catchup, rebuild)


def oldest_opening() -> tuple[str, dict[str, Any]]:
    """The oldest release in the corpus and its stored `OpenedByRequest`'s state."""
    release = min((path.name for path in CORPUS.iterdir()), key=_version)
    corpus = json.loads((CORPUS / release / "postgresql.json").read_text())
    event = next(e for e in corpus["events"] if e["topic"] == TOPIC)
    state: dict[str, Any] = json.loads(event["state"])
    return release, state


def _version(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


def write_oldest(spec: StoreSpec, template: dict[str, Any], lessons: int) -> None:
    """The population's lessons, one oldest-format opening event each."""
    from eventsourcing.persistence import StoredEvent

    from adapters.eventstore import event_store, open_ledger

    ledger = open_ledger(spec.ledger_url)
    try:
        recorder = event_store(ledger).recorder
        for first in range(0, lessons, WRITE_PAGE):
            count = min(WRITE_PAGE, lessons - first)
            recorder.insert_events(
                [
                    StoredEvent(lesson_id, 1, TOPIC, state)
                    for lesson_id, state in _oldest_states(template, first, count)
                ]
            )
    finally:
        ledger.close()


def _oldest_states(
    template: dict[str, Any], first: int, count: int
) -> Iterator[tuple[UUID, bytes]]:
    now = time.time()
    for number, r in enumerate(
        requests(POPULATION, first, count, per_provider=LESSONS_PER_PROVIDER), first
    ):
        key = {
            "provider_id": r.provider_id,
            "school_id": r.school_id,
            "lesson_date": r.lesson_date,
            "time_slot": r.time_slot,
        }
        state = {
            **template,
            **key,
            "lesson_date": {"_type_": "date_iso", "_data_": r.lesson_date},
            "timestamp": {"_type_": "datetime_iso", "_data_": _iso(now + number / 1e6)},
            "request_id": r.request_id,
            "correlation_id": None,
            "as_sent": key,
        }
        yield r.lesson_id, json.dumps(state, separators=(",", ":")).encode()


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()
