"""The audit trail as JSON Lines: one event per line, with its metadata and its position
(the notification id), read from the ledger's notification log a page at a time, and
checked back against the ledger.

Memory stays constant in the length of the log: one page of notifications is held at a
time. Filtering by provider or school needs each event's lesson key, which only the
lesson's first event carries: an `Opened`, or an `OpenedByRequest` (a subclass of it, a
new slot and its first request in one event); being first, it is read before the rest.
The ids of the matching lessons are kept as the log streams past, which is
O(matching lessons).

Students' sensitive part (IEP goals, accommodations, reading levels) never leaves the
ledger this way: `students` is exported as a count, and the fingerprint of a request
(a hash over its details, students included) is left out too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from domain import LessonSlot
from domain.commands import check_fields
from domain.keys import canonical_provider_id, canonical_school_id
from projections.log import EventLog
from projections.merkle.checkpoint import Checkpoint
from projections.merkle.verify import (
    EventProof,
    InvalidCheckpoint,
    InvalidProof,
    verify_checkpoint,
    verify_event,
)

PAGE_SIZE = 500
"""Notifications per read: the same page the projections use."""

# Fields every line carries at its top level, or leaves out (see the module docstring).
_METADATA = {"request_id", "actor", "correlation_id", "source", "as_sent"}
_LEFT_OUT = {"timestamp", "originator_id", "originator_version", "originator_topic", "fingerprint"}
_SENSITIVE = "students"
STUDENT_DATA = frozenset({"data.content", "data.students"})
"""What `students encrypt-existing` changes in an event, as an export shows it."""


def export_record(position: int, event: Any) -> dict[str, Any]:
    """One line of the export, as JSON data: where the event is in the log, which lesson,
    which version, what happened, when, who, and what changed (`data`)."""
    fields = vars(event)
    data = {k: v for k, v in fields.items() if k not in _METADATA and k not in _LEFT_OUT}
    if _SENSITIVE in data:
        data[_SENSITIVE] = None if data[_SENSITIVE] is None else len(data[_SENSITIVE])
    record = {
        "position": position,
        "lesson_id": event.originator_id,
        "version": event.originator_version,
        "event": type(event).__name__,
        "recorded_at": event.timestamp,
        **{name: fields.get(name) for name in sorted(_METADATA)},
        "data": data,
    }
    # Through JSON and back, so a record compares equal to a line read from a file.
    normalised: dict[str, Any] = json.loads(json.dumps(record, default=_encoded))
    return normalised


def _encoded(value: object) -> str:
    """What events hold beside JSON's own types: times, dates, ids."""
    if isinstance(value, date | UUID):  # datetime is a date
        return value.isoformat() if isinstance(value, date) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def export_line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


@dataclass
class TrailFilter:
    """Which events an export holds: of one provider, one school, recorded since a time."""

    provider_id: str | None = None
    school_id: str | None = None
    since: datetime | None = None
    _lessons: set[UUID] = field(default_factory=set)

    def __post_init__(self) -> None:
        # The key's parts are compared in canonical form, like the ledger keys them; a bad
        # one is an InvalidLessonRequest naming the field.
        checks: list[tuple[str, Any, object]] = [
            (name, canonical, value)
            for name, canonical, value in (
                ("provider_id", canonical_provider_id, self.provider_id),
                ("school_id", canonical_school_id, self.school_id),
            )
            if value is not None
        ]
        for (name, _, _), canonical_value in zip(checks, check_fields(checks), strict=True):
            setattr(self, name, canonical_value)

    @property
    def by_key(self) -> bool:
        return self.provider_id is not None or self.school_id is not None

    def admits(self, event: Any) -> bool:
        """Whether the event belongs in the export; must see every event, in log order."""
        if self.by_key:
            if isinstance(event, LessonSlot.Opened) and self._key_matches(event):
                self._lessons.add(event.originator_id)
            if event.originator_id not in self._lessons:
                return False
        return self.since is None or event.timestamp >= self.since

    def _key_matches(self, opened: Any) -> bool:
        return (self.provider_id is None or opened.provider_id == self.provider_id) and (
            self.school_id is None or opened.school_id == self.school_id
        )


def trail(
    log: EventLog,
    only: TrailFilter,
    after: int = 0,
    progress: Callable[[int], object] | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of the log's events that the filter admits, in log order, read a
    page at a time (at most one page ahead of the caller).
    `progress(position)` is called after each page."""
    for page in log.pages(after=after, page_size=PAGE_SIZE):
        for position, event in zip(page.ids, page.events, strict=True):
            if only.admits(event):
                yield export_record(position, event)
        if progress is not None:
            progress(page.position)


@dataclass(frozen=True)
class Difference:
    """One way an export and the ledger disagree."""

    line: int | None
    """The export's line number (None for an event the export is missing)."""
    position: int | None
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "missing line"
        at = f" (position {self.position})" if self.position is not None else ""
        return f"{where}{at}: {self.problem}"


@dataclass
class Verification:
    """What `verify` found: how many lines it checked, and every difference."""

    lines: int = 0
    last_position: int = 0
    differences: list[Difference] = field(default_factory=list)


def verify(
    lines: Iterable[str], log: EventLog, only: TrailFilter, ignored: frozenset[str] = frozenset()
) -> Verification:
    """Check an export against the ledger, both read as streams and merged by position:
    every line must be the ledger's event at its position, unchanged, and every event the
    filter admits up to the export's last position must have its line. Events after the
    last line are newer than the export and not expected in it. `ignored` fields (e.g.
    `data.content`, which the student-data migration seals) may differ."""
    found = Verification()
    expected = trail(log, only)
    pending = next(expected, None)
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        found.lines += 1
        record = _parsed(text)
        if record is not None:
            record.pop("proof", None)  # an export with proofs: `verify_proven` checks them
        position = _position(record)
        if record is None or position is None:
            found.differences.append(Difference(number, None, "is not a line of an export"))
            continue
        if position <= found.last_position:
            found.differences.append(
                Difference(number, position, "is out of order or repeated (positions only grow)")
            )
            continue
        found.last_position = position
        while pending is not None and pending["position"] < position:
            found.differences.append(_missing(pending))
            pending = next(expected, None)
        if pending is not None and pending["position"] == position:
            changed = [f for f in changed_fields(pending, record) if f not in ignored]
            if changed:
                found.differences.append(
                    Difference(number, position, f"differs from the ledger in {', '.join(changed)}")
                )
            pending = next(expected, None)
        else:
            found.differences.append(Difference(number, position, _absent(log, position)))
    return found


def _parsed(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):  # no line of an export is nested that deep
        return None
    return record if isinstance(record, dict) else None


def _missing(record: dict[str, Any]) -> Difference:
    return Difference(
        None,
        record["position"],
        f"the export leaves out {record['event']} v{record['version']} of lesson "
        f"{record['lesson_id']}",
    )


def _absent(log: EventLog, position: int) -> str:
    if log.has(position):
        return (
            "this event is not one the filters admit: verify with the filters of the export "
            "(--provider, --school, --since)"
        )
    return "the ledger has no event at this position"


def changed_fields(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The fields whose JSON differs. As JSON, not as Python values: Python finds `true`
    equal to `1`, and `1.0` too, so an altered line read as unchanged."""
    if _same(expected, actual):
        return []  # the usual line: one comparison
    names = sorted(set(expected) | set(actual))
    changed = [n for n in names if n != "data" and not _same(expected.get(n), actual.get(n))]
    data, sent = expected.get("data") or {}, actual.get("data")
    if not isinstance(sent, dict):
        return [*changed, "data"] if not _same(data, sent) else changed
    changed += [
        f"data.{n}" for n in sorted(set(data) | set(sent)) if not _same(data.get(n), sent.get(n))
    ]
    return changed


def _same(expected: object, actual: object) -> bool:
    return _json(expected) == _json(actual)


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _position(record: dict[str, Any] | None) -> int | None:
    """A line's position, if it has one (`true` is no position, though Python takes it
    for 1)."""
    position = None if record is None else record.get("position")
    return position if isinstance(position, int) and not isinstance(position, bool) else None


def verify_proven(
    lines: Iterable[str],
    checkpoint: Checkpoint,
    public_key: bytes,
    decode: Callable[[EventProof], Any],
    ignored: frozenset[str] = frozenset(),
) -> Verification:
    """Check an export made with proofs, without the ledger: the checkpoint is signed by
    this key, each line's proof puts its event's stored bytes in the checkpoint's tree,
    and the line is what those bytes say (`decode` turns them into the event). What it
    cannot tell without the ledger: whether the export left events out."""
    found = Verification()
    try:
        verify_checkpoint(public_key, checkpoint)
    except InvalidCheckpoint as error:
        found.differences.append(Difference(None, None, str(error)))
        return found
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        found.lines += 1
        record = _parsed(text)
        position = _position(record)
        if record is None or position is None:
            found.differences.append(Difference(number, None, "is not a line of an export"))
            continue
        found.last_position = max(found.last_position, position)
        problem = _unproven(record, checkpoint, public_key, decode, ignored)
        if problem is not None:
            found.differences.append(Difference(number, position, problem))
    return found


def _unproven(
    record: dict[str, Any],
    checkpoint: Checkpoint,
    public_key: bytes,
    decode: Callable[[EventProof], Any],
    ignored: frozenset[str],
) -> str | None:
    """What is wrong with one line of a proven export (None: nothing)."""
    if "proof" not in record:
        return "has no proof (export it with --proofs)"
    try:
        proof = EventProof.from_json(record.pop("proof"))
        verify_event(public_key, checkpoint, proof)
    except InvalidProof as error:
        return str(error)
    if (str(proof.lesson_id), proof.version) != (record.get("lesson_id"), record.get("version")):
        return "its proof is of another event"
    expected = export_record(record["position"], decode(proof))
    changed = [f for f in changed_fields(expected, record) if f not in ignored]
    if changed:
        return f"differs from the proven event in {', '.join(changed)}"
    return None
