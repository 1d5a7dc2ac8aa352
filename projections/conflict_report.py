"""The incident report as a query: every rejected attempt, grouped by cause; the most
contested slots; the batches that collided with each other, and how far apart; and the
keys that only became equal after canonicalisation (`8:30-9:00` vs `08:30-09:00`).

It streams the notification log (only the event types it needs, a page at a time) and
keeps per lesson only what a collision needs: each request's batch and time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain import LessonSlot
from domain.errors import FieldError, InvalidLessonRequest, parse_field
from domain.invalid_requests import InvalidRequest
from domain.keys import canonical_provider_id, canonical_school_id
from projections.log import EventLog

PAGE_SIZE = 1000
TOP = 10
NO_BATCH = "(no batch)"
"""The batch of requests sent on their own, in the report's collisions."""
ONE_BATCH = "itself: one lesson sent twice"
"""What a collision of a batch with itself says (`BatchCollision.one_batch`)."""
CAUSES = (
    "slot_already_held",
    "wrong_state",
    "stale_generation",
    "idempotency_mismatch",
    "missing_time_slot",
    "missing_school",
    "invalid_input",
)
_CLAIMS = ("request", "import")  # commands that claim a slot; their conflicts are "held"
_READ = [
    get_topic(event_class)
    for event_class in (
        LessonSlot.Opened,
        LessonSlot.OpenedByRequest,
        LessonSlot.LessonRequested,
        LessonSlot.LessonImported,
        LessonSlot.RequestRejected,
    )
]


@dataclass
class ContestedSlot:
    """A slot others tried to claim while it was held."""

    lesson_id: UUID
    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str
    rejections: int = 0
    requesters: set[str] = field(default_factory=set)


@dataclass
class BatchCollision:
    """Requests of `batch` turned away because a request of `holder_batch` held the slot;
    the gaps are the seconds between the holder's request and the rejected one. A batch
    that is its own holder sent one lesson twice (`duplicate_in_batch`)."""

    batch: str
    holder_batch: str
    count: int = 0
    min_gap_seconds: float = float("inf")
    max_gap_seconds: float = 0.0
    lessons: list[UUID] = field(default_factory=list)
    """The lessons they collided on (the first few)."""

    @property
    def one_batch(self) -> bool:
        """The batch held the slot itself: it sent one lesson twice."""
        return self.batch == self.holder_batch != NO_BATCH


@dataclass
class SpellingClash:
    """One lesson requested under different spellings of its key."""

    lesson_id: UUID
    provider_id: str
    school_id: str
    lesson_date: date
    time_slot: str
    spellings: list[dict[str, str]]


@dataclass
class ConflictReport:
    """What the incident report could not answer."""

    causes: dict[str, int]
    contested: list[ContestedSlot]
    collisions: list[BatchCollision]
    spellings: list[SpellingClash]
    invalid_examples: list[InvalidRequest]

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple, set)):
                items = [plain(v) for v in value]
                return sorted(items) if isinstance(value, set) else items
            if isinstance(value, (UUID, date, datetime)):
                return str(value) if isinstance(value, UUID) else value.isoformat()
            return value

        return {
            "causes": self.causes,
            "contested": [plain(asdict(slot)) for slot in self.contested],
            "collisions": [plain(asdict(c)) for c in self.collisions],
            "spellings": [plain(asdict(s)) for s in self.spellings],
            "invalid_examples": [plain(asdict(i)) for i in self.invalid_examples],
        }


@dataclass
class _Slot:
    key: tuple[str, str, date, str]
    requests: dict[str, tuple[str | None, datetime]] = field(default_factory=dict)
    spellings: list[dict[str, str]] = field(default_factory=list)
    rejections: int = 0
    requesters: set[str] = field(default_factory=set)


def conflict_report(
    log: EventLog,
    invalid_requests: Iterable[InvalidRequest],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    provider_id: str | None = None,
    school_id: str | None = None,
) -> ConflictReport:
    """The report over events recorded in [since, until], for one provider or school."""
    errors: list[FieldError] = []
    if provider_id is not None:
        provider_id = parse_field(errors, "provider_id", canonical_provider_id, provider_id)
    if school_id is not None:
        school_id = parse_field(errors, "school_id", canonical_school_id, school_id)
    if errors:
        raise InvalidLessonRequest(errors)
    causes: Counter[str] = Counter(dict.fromkeys(CAUSES, 0))
    slots: dict[UUID, _Slot] = {}
    collisions: dict[tuple[str, str], BatchCollision] = {}

    def wanted(slot: _Slot) -> bool:
        provider, school, _, _ = slot.key
        return (provider_id is None or provider == provider_id) and (
            school_id is None or school == school_id
        )

    for event in _events(log):
        if isinstance(event, LessonSlot.Opened):
            key = (event.provider_id, event.school_id, event.lesson_date, event.time_slot)
            slots[event.originator_id] = _Slot(key)
            if not isinstance(event, LessonSlot.LessonRequested):
                continue
        slot = slots.get(event.originator_id)
        if slot is None or not wanted(slot):
            continue
        in_window = (since is None or event.timestamp >= since) and (
            until is None or event.timestamp <= until
        )
        if isinstance(event, (LessonSlot.LessonRequested, LessonSlot.LessonImported)):
            slot.requests[event.request_id] = (event.correlation_id, event.timestamp)
            if in_window:
                _spelled(slot, event.as_sent)
                slot.requesters.add(event.actor)
        elif isinstance(event, LessonSlot.RequestRejected) and in_window:
            cause = _cause(event)
            causes[cause] += 1
            if cause != "slot_already_held":
                continue
            slot.rejections += 1
            slot.requesters.add(event.actor)
            _spelled(slot, event.as_sent)
            holder = slot.requests.get(event.holder_request_id or "")
            if holder is not None:
                _collided(collisions, event, *holder)

    examples: list[InvalidRequest] = []
    for refused in invalid_requests:
        if (
            provider_id is not None
            and refused.as_sent.get("provider_id", "").lower() != provider_id
        ):
            continue
        if school_id is not None and refused.as_sent.get("school_id", "").strip() != school_id:
            continue
        causes[refused.cause] += 1
        if len(examples) < TOP:
            examples.append(refused)

    return ConflictReport(
        causes=dict(causes),
        contested=_most_contested(slots),
        collisions=sorted(collisions.values(), key=lambda c: (-c.count, c.batch)),
        spellings=[
            SpellingClash(lesson_id, *slot.key, spellings=slot.spellings)
            for lesson_id, slot in slots.items()
            if len(slot.spellings) > 1
        ],
        invalid_examples=examples,
    )


def _events(log: EventLog) -> Iterator[Any]:
    """The events the report reads, a page at a time."""
    for page in log.pages(after=0, page_size=PAGE_SIZE, topics=_READ):
        yield from page.events


def _cause(rejection: LessonSlot.RequestRejected) -> str:
    if rejection.reason == "stale":
        return "stale_generation"
    if rejection.reason == "idempotency_mismatch":
        return "idempotency_mismatch"
    return "slot_already_held" if rejection.command in _CLAIMS else "wrong_state"


def _spelled(slot: _Slot, as_sent: dict[str, str] | None) -> None:
    if as_sent and as_sent not in slot.spellings:
        slot.spellings.append(as_sent)


def _collided(
    collisions: dict[tuple[str, str], BatchCollision],
    rejection: LessonSlot.RequestRejected,
    holder_batch: str | None,
    held_since: datetime,
) -> None:
    pair = (rejection.correlation_id or NO_BATCH, holder_batch or NO_BATCH)
    collision = collisions.setdefault(pair, BatchCollision(*pair))
    gap = (rejection.timestamp - held_since).total_seconds()
    collision.count += 1
    collision.min_gap_seconds = min(collision.min_gap_seconds, gap)
    collision.max_gap_seconds = max(collision.max_gap_seconds, gap)
    if len(collision.lessons) < TOP and rejection.originator_id not in collision.lessons:
        collision.lessons.append(rejection.originator_id)


def _most_contested(slots: dict[UUID, _Slot]) -> list[ContestedSlot]:
    contested = [
        ContestedSlot(lesson_id, *slot.key, rejections=slot.rejections, requesters=slot.requesters)
        for lesson_id, slot in slots.items()
        if slot.rejections
    ]
    contested.sort(key=lambda c: (-c.rejections, str(c.lesson_date), c.time_slot))
    return contested[:TOP]
