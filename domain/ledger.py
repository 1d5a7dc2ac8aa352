"""LessonLedger: the application service. Load, decide, save; let the store decide races.

Every command validates its input in full, loads the slot, asks the aggregate to
decide and saves what it decided. When the store refuses the save because another
writer appended to the same slot first (the unique (originator_id, version)), the
ledger reloads and decides again, so the loser of a race gets a domain answer
(conflict or replayed), never a database error.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal, ParamSpec, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    PersistenceError,
    Transcoding,
)

from domain.commands import (
    ImportLesson,
    RequestLesson,
    check_actor,
    check_attempt,
    check_content,
    check_correlation_id,
    check_fields,
    check_model,
    check_reason,
    check_source,
    spelled,
    validate_import,
    validate_request,
)
from domain.errors import (
    DomainRejection,
    FieldError,
    InvalidLessonRequest,
    LedgerError,
    LedgerUnavailable,
    LessonConflict,
    LessonNotFound,
)
from domain.invalid_requests import InvalidRequest, InvalidRequestLog, shortened
from domain.keys import LessonKey, canonical_request_id
from domain.lesson import Decision, LessonSlot, LessonState, Metadata, Outcome

MAX_BATCH_SIZE = 500
MAX_SAVE_BYTES = 1024 * 1024
SlotCommand = RequestLesson | ImportLesson
Decided = LessonSlot | LessonSlot.OpenedByRequest
"""What a command decided: a slot with pending events, or a new slot's opening event."""
KEY_PARTS = ("provider_id", "school_id", "lesson_date", "time_slot", "kind")
log = logging.getLogger("lesson_ledger.ledger")
BatchOutcome = Literal[
    "accepted", "replayed", "conflict", "duplicate_in_batch", "invalid", "aborted"
]
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CommandResult:
    """What a command did: `position` is the notification id of its last event, or None."""

    lesson_id: UUID
    outcome: Outcome
    attempt: int
    position: int | None


@dataclass(frozen=True)
class BatchItemResult:
    """The answer for one item of a batch, at its index in the input."""

    index: int
    outcome: BatchOutcome
    lesson_id: UUID | None
    attempt: int | None = None
    position: int | None = None
    error: LedgerError | None = None


@dataclass(frozen=True)
class BatchResult:
    """Per-item results in input order. An atomic batch that failed wrote nothing."""

    batch_id: str | None
    mode: str
    written: bool
    items: list[BatchItemResult]

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(BatchOutcome.__args__, 0)  # type: ignore[attr-defined]
        for item in self.items:
            counts[item.outcome] += 1
        return counts


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a slot's history: what happened, when, who and why."""

    version: int
    event: str
    recorded_at: datetime
    request_id: str
    actor: str
    correlation_id: str | None
    source: str
    changes: dict[str, Any]
    as_sent: dict[str, str] | None = None


@dataclass(frozen=True)
class LessonHistory:
    """A slot's events and rejected attempts, in order, and its state after the last."""

    lesson_id: UUID
    entries: list[HistoryEntry]
    state: LessonState | None


@dataclass
class _KeyGroup:
    """The items of a batch that share one key, decided together on one slot."""

    key: LessonKey
    items: list[tuple[int, SlotCommand]]
    decided: Decided | None = None
    results: dict[int, BatchItemResult] = field(default_factory=dict)


class DateAsISO(Transcoding):
    """Stores `date` values as ISO text: the default transcoder has no date."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


def _database_errors_as_unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """No database exception leaves the ledger: what races do not explain is an outage."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except PersistenceError as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise LedgerUnavailable(f"the ledger's database failed: {first_line}") from error

    return wrapper


class LessonLedger(Application[UUID]):
    """The ledger of lesson slots: commands, queries and history."""

    name = "LessonLedger"
    env: ClassVar[dict[str, str]] = {
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "SQLITE_LOCK_TIMEOUT": "30",
    }
    # Each retry means another writer made progress on the slot, so this is only
    # reached under pathological contention.
    MAX_RACE_RETRIES = 100

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    # Commands.

    @_database_errors_as_unavailable
    def request_lesson(
        self,
        *,
        provider_id: object,
        school_id: object,
        lesson_date: object,
        time_slot: object = None,
        request_id: object,
        actor: object,
        kind: object = "scheduled",
        details: object = None,
        correlation_id: object = None,
        source: object = "api",
    ) -> CommandResult:
        """Claim the slot for this request: a new attempt, or replayed, or a conflict."""
        request = self._validated(
            provider_id=provider_id,
            school_id=school_id,
            lesson_date=lesson_date,
            time_slot=time_slot,
            request_id=request_id,
            actor=actor,
            kind=kind,
            details=details,
            correlation_id=correlation_id,
            source=source,
        )
        by = _metadata(request)

        return self._decide(
            request.key.lesson_id,
            lambda slot: _apply(request, slot, request.key, by),
            presume_new=True,
        )

    @_database_errors_as_unavailable
    def record_generation(
        self,
        *,
        lesson_id: UUID,
        attempt: int,
        content: dict[str, Any],
        model: str,
        actor: str = "worker",
    ) -> CommandResult:
        """Record the generated lesson of an attempt; an older attempt is stale."""
        attempt, content, model, actor = check_fields(
            [
                ("attempt", check_attempt, attempt),
                ("content", check_content, content),
                ("model", check_model, model),
                ("actor", check_actor, actor),
            ]
        )
        return self._decide(
            lesson_id,
            lambda slot: (
                _existing(slot, lesson_id),
                _existing(slot, lesson_id).record_generation(attempt, content, model, actor),
            ),
        )

    @_database_errors_as_unavailable
    def record_failure(
        self, *, lesson_id: UUID, attempt: int, reason: str, actor: str = "worker"
    ) -> CommandResult:
        """Record that generating an attempt failed, and why."""
        attempt, reason, actor = check_fields(
            [
                ("attempt", check_attempt, attempt),
                ("reason", _required_reason, reason),
                ("actor", check_actor, actor),
            ]
        )
        return self._decide(
            lesson_id,
            lambda slot: (
                _existing(slot, lesson_id),
                _existing(slot, lesson_id).record_failure(attempt, reason, actor),
            ),
        )

    @_database_errors_as_unavailable
    def regenerate(
        self,
        *,
        lesson_id: UUID,
        request_id: str,
        actor: str,
        reason: str | None = None,
        correlation_id: str | None = None,
        source: str = "api",
    ) -> CommandResult:
        """Start a new attempt for a generated or failed lesson."""
        by, reason = self._checked_metadata(request_id, actor, reason, correlation_id, source)
        return self._decide(
            lesson_id,
            lambda slot: (
                _existing(slot, lesson_id),
                _existing(slot, lesson_id).regenerate(by, reason),
            ),
        )

    @_database_errors_as_unavailable
    def cancel(
        self,
        *,
        lesson_id: UUID,
        request_id: str,
        actor: str,
        reason: str | None = None,
        correlation_id: str | None = None,
        source: str = "api",
    ) -> CommandResult:
        """Cancel a lesson: the slot is free to be requested again."""
        by, reason = self._checked_metadata(request_id, actor, reason, correlation_id, source)
        return self._decide(
            lesson_id,
            lambda slot: (
                _existing(slot, lesson_id),
                _existing(slot, lesson_id).cancel(by, reason),
            ),
        )

    @_database_errors_as_unavailable
    def request_batch(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        mode: str = "partial",
        batch_id: str | None = None,
    ) -> BatchResult:
        """Decide up to 500 requests, each on its own (partial) or all or nothing (atomic).

        Accepted items are written together, in one transaction when no other writer
        gets in the way; when one does, only the affected items are decided again.
        """
        if mode not in ("partial", "atomic"):
            raise InvalidLessonRequest(
                [FieldError(field="mode", message=f"must be 'partial' or 'atomic', not {mode!r}")]
            )
        if len(items) > MAX_BATCH_SIZE:
            raise InvalidLessonRequest(
                [
                    FieldError(
                        field="items",
                        message=f"a batch holds at most {MAX_BATCH_SIZE} requests, "
                        f"not {len(items)}",
                    )
                ]
            )
        if batch_id is not None:
            batch_id = check_fields([("batch_id", canonical_request_id, batch_id)])[0]

        commands: list[RequestLesson | InvalidLessonRequest] = []
        for item in items:
            try:
                commands.append(self._validated(**_batch_item(item, batch_id)))
            except InvalidLessonRequest as invalid:
                commands.append(invalid)
        return self._decide_batch(commands, mode=mode, batch_id=batch_id)

    @_database_errors_as_unavailable
    def import_lessons(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        actor: str = "import",
        batch_id: str | None = None,
        dry_run: bool = False,
    ) -> BatchResult:
        """Bring rows of the old lessons table into the ledger, each as a LessonImported
        event with its legacy id (`id`, `provider_id`, `school_id`, `lesson_date`,
        `time_slot`, `content`, `created_at`, `updated_at`). A row whose key another row
        or lesson already holds is a conflict: reported, never merged. Importing a row
        again is replayed. A dry run decides every row and writes nothing."""
        commands: list[ImportLesson | InvalidLessonRequest] = []
        for row in rows:
            try:
                commands.append(validate_import(row, actor=actor, correlation_id=batch_id))
            except InvalidLessonRequest as invalid:
                commands.append(invalid)
        return self._decide_batch(
            commands, mode="dry-run" if dry_run else "partial", batch_id=batch_id
        )

    def _decide_batch(
        self,
        commands: Sequence[SlotCommand | InvalidLessonRequest],
        *,
        mode: str,
        batch_id: str | None,
    ) -> BatchResult:
        results: dict[int, BatchItemResult] = {}
        groups: dict[UUID, _KeyGroup] = {}
        for index, command in enumerate(commands):
            if isinstance(command, InvalidLessonRequest):
                results[index] = BatchItemResult(index, "invalid", None, error=command)
                continue
            key = command.key
            groups.setdefault(key.lesson_id, _KeyGroup(key, [])).items.append((index, command))

        written = True
        if mode == "atomic":
            written = self._commit_atomic(list(groups.values()), results)
        elif mode == "dry-run":
            for group in groups.values():
                self._decide_group(group, record_rejections=False)
            written = False
        else:
            for chunk in _by_size(list(groups.values())):
                self._commit_partial(chunk)
        for group in groups.values():
            results.update(group.results)
        return BatchResult(batch_id, mode, written, [results[i] for i in range(len(commands))])

    # Queries.

    @_database_errors_as_unavailable
    def get_lesson(self, lesson_id: UUID) -> LessonState | None:
        """The slot's current state from its events, or None for an unknown id."""
        slot = self._load(lesson_id)
        return slot.state() if slot else None

    @_database_errors_as_unavailable
    def history(
        self,
        lesson_id: UUID,
        as_of_version: int | None = None,
        as_of: datetime | None = None,
    ) -> LessonHistory:
        """The slot's events and rejected attempts in order, and its state as it was then."""
        events = [cast(LessonSlot.Event, e) for e in self.events.get(lesson_id, lte=as_of_version)]
        if as_of is not None:
            events = [e for e in events if e.timestamp <= as_of]
        if not events:
            known = as_of_version is not None or as_of is not None
            if known and self._load(lesson_id) is not None:
                return LessonHistory(lesson_id, [], None)
            raise LessonNotFound(f"no lesson has the id {lesson_id}")
        # The state as it was, from the events already read (not read again).
        then = project_aggregate(None, events)
        assert isinstance(then, LessonSlot)
        return LessonHistory(lesson_id, [_history_entry(e) for e in events], then.state())

    # Refused input.

    invalid_requests: InvalidRequestLog | None = None
    """Where refused requests are kept for the audit (set by adapters.open_ledger)."""

    def _validated(self, **fields: Any) -> RequestLesson:
        """The request validated; when it is invalid, it is kept for the audit first."""
        try:
            return validate_request(**fields)
        except InvalidLessonRequest as invalid:
            self._keep_invalid(fields, invalid)
            raise

    def _keep_invalid(self, fields: dict[str, Any], invalid: InvalidLessonRequest) -> None:
        if self.invalid_requests is None:
            return
        text = spelled(
            **{k: fields.get(k) for k in ("request_id", "actor", "correlation_id", "source")}
        )
        refused = InvalidRequest(
            recorded_at=datetime.now(UTC),
            request_id=text.get("request_id"),
            actor=text.get("actor"),
            correlation_id=text.get("correlation_id"),
            source=text.get("source"),
            as_sent=spelled(**{k: fields.get(k) for k in KEY_PARTS}),
            errors=shortened(invalid.errors),
        )
        try:
            self.invalid_requests.record(refused)
        except Exception:  # the audit must never turn a 422 into a 500
            log.warning("could not keep a refused request for the audit", exc_info=True)

    def close(self) -> None:
        if self.invalid_requests is not None:
            self.invalid_requests.close()
        # A recorder with connections of its own (adapters/postgres_recorder.py).
        close_recorder: Callable[[], None] | None = getattr(self.recorder, "close", None)
        if close_recorder is not None:
            close_recorder()
        super().close()

    # Deciding and saving.

    def _decide(
        self,
        lesson_id: UUID,
        decide: Callable[[LessonSlot | None], tuple[Decided, Decision]],
        *,
        presume_new: bool = False,
    ) -> CommandResult:
        for attempt in range(self.MAX_RACE_RETRIES):
            # Most requests are for new slots: try that first without reading, so the
            # usual request is one round trip; the store refuses it if the slot exists.
            loaded = None if presume_new and attempt == 0 else self._load(lesson_id)
            try:
                decided, decision = decide(loaded)
            except DomainRejection:
                # The rejection is part of the slot's history: record it, then answer.
                if loaded is not None and self._save_unless_raced(loaded) is None:
                    continue
                raise
            if decision.outcome == "replayed":
                return CommandResult(lesson_id, "replayed", decision.attempt, None)
            positions = self._save_unless_raced(decided)
            if positions is not None:
                return CommandResult(lesson_id, "accepted", decision.attempt, positions[lesson_id])
        raise LedgerUnavailable(f"lesson {lesson_id}: too much contention, try again")

    def _commit_partial(self, groups: list[_KeyGroup], *, presume_new: bool = True) -> None:
        """Save the decided groups in one transaction, presuming first that every slot is
        new (no reads). When a slot was not new, or another writer got to one of the
        slots first, decide them all again on fresh state and retry once; if that
        loses a race too, split the batch in halves, so a busy batch still makes progress
        in O(conflicts x log n) transactions rather than one per item."""
        tries = (3 if presume_new else 2) if len(groups) > 1 else self.MAX_RACE_RETRIES
        for attempt in range(tries):
            for group in groups:
                self._decide_group(
                    group, record_rejections=True, presume_new=presume_new and attempt == 0
                )
            positions = self._save_unless_raced(*[g.decided for g in groups])
            if positions is not None:
                _set_positions(groups, positions)
                return
        if len(groups) == 1:
            raise LedgerUnavailable("too much contention on one slot, try again")
        middle = len(groups) // 2
        self._commit_partial(groups[:middle], presume_new=False)
        self._commit_partial(groups[middle:], presume_new=False)

    def _commit_atomic(self, groups: list[_KeyGroup], results: dict[int, BatchItemResult]) -> bool:
        """All accepted in one transaction, or nothing written and the reasons returned."""
        for attempt in range(self.MAX_RACE_RETRIES):
            for group in groups:
                self._decide_group(group, record_rejections=False, presume_new=attempt == 0)
            outcomes = [r.outcome for r in results.values()]
            outcomes += [r.outcome for g in groups for r in g.results.values()]
            if any(outcome not in ("accepted", "replayed") for outcome in outcomes):
                for group in groups:
                    group.results = {
                        i: BatchItemResult(i, "aborted", r.lesson_id, error=None)
                        if r.outcome == "accepted"
                        else r
                        for i, r in group.results.items()
                    }
                return False
            positions = self._save_unless_raced(*[g.decided for g in groups])
            if positions is not None:
                _set_positions(groups, positions)
                return True
        raise LedgerUnavailable("too much contention for an atomic batch, try again")

    def _decide_group(
        self, group: _KeyGroup, *, record_rejections: bool, presume_new: bool = False
    ) -> None:
        """Decide a key's items on a freshly loaded slot (or a new one, when presuming
        it is new): the first item claims it, the batch's later items for the same key
        are duplicates."""
        lesson_id = group.key.lesson_id
        (first_index, command), *duplicates = group.items
        by = _metadata(command)
        loaded = None if presume_new else self._load(lesson_id)
        group.results = {}
        try:
            decided, decision = _apply(command, loaded, group.key, by)
        except DomainRejection as rejection:
            assert loaded is not None, "a new slot turns nothing away"
            decided = loaded
            result = BatchItemResult(first_index, "conflict", lesson_id, error=rejection)
        else:
            result = BatchItemResult(
                first_index, decision.outcome, lesson_id, attempt=decision.attempt
            )
        group.results[first_index] = result
        holder = _slot_of(decided).current_holder() if duplicates else None
        for index, _ in duplicates:
            duplicate = LessonConflict(
                f"items[{index}] asks for the same lesson as items[{first_index}] of this batch",
                holder,
            )
            group.results[index] = BatchItemResult(
                index, "duplicate_in_batch", lesson_id, error=duplicate
            )
        # A recorded rejection is only written when the batch writes at all: an atomic
        # batch with any rejection writes nothing.
        group.decided = decided if record_rejections or result.outcome == "accepted" else None

    def _save_unless_raced(self, *decided: Decided | None) -> dict[UUID, int] | None:
        """Save what was decided (slots' pending events, new slots' opening events) in one
        transaction, and return each slot's position (the notification id of its last
        event); None when another writer appended to one of the slots first (so they
        must be reloaded and decided again)."""
        # The mapper and recorder directly: Application.save's bookkeeping (snapshots,
        # runtime Protocol checks on every event) cost more CPU than the write itself,
        # and the event store's Recording objects (two per event) are not needed here.
        events: list[LessonSlot.Event] = []
        for item in decided:
            if isinstance(item, LessonSlot):
                events += cast(list[LessonSlot.Event], item.collect_events())
            elif item is not None:
                events.append(item)
        if not events:
            return {}
        stored = [self.mapper.to_stored_event(event) for event in events]
        try:
            ids = self.recorder.insert_events(stored)
        except IntegrityError:
            time.sleep(random.uniform(0, 0.002))  # let the winner finish; spread the retries
            return None
        assert ids is not None and len(ids) == len(events), "the recorder numbers each event"
        return {event.originator_id: id_ for event, id_ in zip(events, ids, strict=True)}

    def _load(self, lesson_id: UUID) -> LessonSlot | None:
        try:
            slot: LessonSlot = self.repository.get(lesson_id)
        except AggregateNotFoundError:
            return None
        return slot

    def _checked_metadata(
        self,
        request_id: object,
        actor: object,
        reason: object,
        correlation_id: object,
        source: object,
    ) -> tuple[Metadata, str | None]:
        checked = check_fields(
            [
                ("request_id", canonical_request_id, request_id),
                ("actor", check_actor, actor),
                ("reason", check_reason, reason),
                ("correlation_id", check_correlation_id, correlation_id),
                ("source", check_source, source),
            ]
        )
        rid, who, why, batch, origin = checked
        return Metadata(rid, who, batch, origin), why


def _by_size(groups: list[_KeyGroup]) -> Iterator[list[_KeyGroup]]:
    """The groups in chunks of at most MAX_SAVE_BYTES of details each: one save of many
    megabytes stalls psycopg's pipeline on PostgreSQL, and gains nothing over a few."""
    chunk: list[_KeyGroup] = []
    size = 0
    for group in groups:
        grows = sum(_payload_size(command) for _, command in group.items)
        if chunk and size + grows > MAX_SAVE_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(group)
        size += grows
    if chunk:
        yield chunk


def _payload_size(command: SlotCommand) -> int:
    if isinstance(command, ImportLesson):
        return len(json.dumps(command.content)) if command.content else 0
    return command.details_size


def _apply(
    command: SlotCommand, slot: LessonSlot | None, key: LessonKey, by: Metadata
) -> tuple[Decided, Decision]:
    """The command decided on the slot, or on a new slot for `key` when there is none."""
    if isinstance(command, ImportLesson):
        slot = slot or LessonSlot.open(key, by)
        decision = slot.import_legacy(
            by,
            command.legacy_id,
            command.content,
            command.created_at,
            command.updated_at,
            command.flags,
        )
        return slot, decision
    if slot is None:
        opened = LessonSlot.first_request(key, by, command.details, command.students)
        return opened, Decision("accepted", 1)
    return slot, slot.request(by, command.details, command.students)


def _slot_of(decided: Decided) -> LessonSlot:
    if isinstance(decided, LessonSlot):
        return decided
    slot = decided.mutate(None)
    assert isinstance(slot, LessonSlot)
    return slot


def _metadata(request: SlotCommand) -> Metadata:
    return Metadata(
        request.request_id, request.actor, request.correlation_id, request.source, request.as_sent
    )


def _existing(slot: LessonSlot | None, lesson_id: UUID) -> LessonSlot:
    if slot is None:
        raise LessonNotFound(f"no lesson has the id {lesson_id}")
    return slot


def _required_reason(value: object) -> str:
    reason = check_reason(value)
    if reason is None:
        raise ValueError("is missing: say why generating the lesson failed")
    return reason


_BATCH_ITEM_FIELDS = frozenset(
    {
        "provider_id",
        "school_id",
        "lesson_date",
        "time_slot",
        "request_id",
        "actor",
        "kind",
        "details",
        "correlation_id",
        "source",
    }
)


def _batch_item(item: Mapping[str, Any], batch_id: str | None) -> dict[str, Any]:
    fields = dict(item)
    if batch_id is not None:
        fields.setdefault("correlation_id", batch_id)
    unknown = sorted(fields.keys() - _BATCH_ITEM_FIELDS)
    if unknown:
        raise InvalidLessonRequest(
            [FieldError(field=name, message="is not a known field") for name in unknown]
        )
    fields.setdefault("provider_id", None)
    fields.setdefault("school_id", None)
    fields.setdefault("lesson_date", None)
    fields.setdefault("request_id", None)
    fields.setdefault("actor", None)
    return fields


def _set_positions(groups: Iterable[_KeyGroup], positions: dict[UUID, int]) -> None:
    for group in groups:
        for index, result in list(group.results.items()):
            if result.outcome == "accepted":
                group.results[index] = BatchItemResult(
                    index,
                    "accepted",
                    result.lesson_id,
                    result.attempt,
                    positions.get(group.key.lesson_id),
                    None,
                )


_BASE_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "request_id",
    "actor",
    "correlation_id",
    "source",
    "fingerprint",
    "as_sent",
}


def _history_entry(event: LessonSlot.Event) -> HistoryEntry:
    fields = vars(event)
    changes = {k: v for k, v in fields.items() if k not in _BASE_FIELDS}
    if changes.get("students") is not None:
        # Sensitive per-student data stays in the event; history shows how many.
        changes["students"] = f"{len(changes['students'])} student(s)"
    return HistoryEntry(
        version=event.originator_version,
        event=type(event).__qualname__.rsplit(".", 1)[-1],
        recorded_at=event.timestamp,
        request_id=fields["request_id"],
        actor=fields["actor"],
        correlation_id=fields["correlation_id"],
        source=fields["source"],
        changes=changes,
        as_sent=fields.get("as_sent"),
    )
