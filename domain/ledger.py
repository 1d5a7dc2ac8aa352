"""LessonLedger: the application service. Validate, load, decide, save; let the store decide
races.

Every command validates its input in full, loads the slot, asks the aggregate to decide
and saves what it decided. When the store refuses the save because another writer
appended to the same slot first, the ledger loads the slot again and decides again, so
the loser of a race gets a domain answer (conflict or replayed), never a database error.
Where the slots live is a port (`SlotStore`, domain/ports.py); adapters/eventstore/
implements it with the eventsourcing library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.batches import MAX_BATCH_SIZE, BatchDecider, BatchResult
from domain.commands import (
    REQUEST_FIELDS,
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
    check_usage,
    spelled,
    validate_import,
    validate_request,
)
from domain.decisions import decide
from domain.errors import (
    DomainRejection,
    FieldError,
    InvalidLessonRequest,
    LedgerUnavailable,
    LessonNotFound,
)
from domain.fingerprint import Fingerprint
from domain.history import LessonHistory, history_of
from domain.invalid_requests import InvalidRequest, InvalidRequestLog, shortened
from domain.keys import canonical_request_id
from domain.lesson import Decided, LessonSlot
from domain.ports import SlotStore, StudentData
from domain.state import Decision, LessonState, Metadata, Outcome

log = logging.getLogger("lesson_ledger.ledger")
KEY_PARTS = ("provider_id", "school_id", "lesson_date", "time_slot", "kind")


@dataclass(frozen=True)
class CommandResult:
    """What a command did: `position` is the notification id of its last event, or None."""

    lesson_id: UUID
    outcome: Outcome
    attempt: int
    position: int | None


class LessonLedger:
    """The ledger of lesson slots: commands, queries and history."""

    # Each retry means another writer made progress on the slot, so this is only
    # reached under pathological contention.
    MAX_RACE_RETRIES = 100

    def __init__(
        self,
        slots: SlotStore,
        student_data: StudentData,
        invalid_requests: InvalidRequestLog | None = None,
    ):
        self.slots = slots
        self.student_data = student_data
        """Where students' details are sealed and opened (domain/sealed.py)."""
        self.invalid_requests = invalid_requests
        """Where refused requests are kept for the audit (None: not kept)."""
        self._batches = BatchDecider(slots, self.MAX_RACE_RETRIES)

    # Commands.

    def request_lesson(self, **fields: Any) -> CommandResult:
        """Claim the slot for this request: a new attempt, or replayed, or a conflict.

        Fields: provider_id, school_id, lesson_date, time_slot (none for
        kind="on_demand"), request_id, actor, kind, details, correlation_id, source.
        """
        request = self._sealed([self._validated(**fields)])[0]
        return self._decide(
            request.key.lesson_id, lambda slot: decide(request, slot), presume_new=True
        )

    def record_generation(
        self,
        *,
        lesson_id: UUID,
        attempt: int,
        content: dict[str, Any],
        model: str,
        actor: str = "worker",
        usage: dict[str, int] | None = None,
    ) -> CommandResult:
        """Record the generated lesson of an attempt (and the tokens it used); an older
        attempt is stale."""
        attempt, content, model, actor, usage = check_fields(
            [
                ("attempt", check_attempt, attempt),
                ("content", check_content, content),
                ("model", check_model, model),
                ("actor", check_actor, actor),
                ("usage", check_usage, usage),
            ]
        )

        def record(slot: LessonSlot) -> Decision:
            sealed = self.student_data.seal_content(
                slot.id, slot.lesson_date, slot.students or [], content
            )
            return slot.record_generation(attempt, sealed, model, actor, usage)

        return self._decide(lesson_id, lambda slot: _on(slot, lesson_id, record))

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
            lambda slot: _on(slot, lesson_id, lambda s: s.record_failure(attempt, reason, actor)),
        )

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
        by, why = _checked_metadata(request_id, actor, reason, correlation_id, source)
        printed = self._print("regenerate", by.actor, why)
        return self._decide(
            lesson_id, lambda slot: _on(slot, lesson_id, lambda s: s.regenerate(by, why, printed))
        )

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
        by, why = _checked_metadata(request_id, actor, reason, correlation_id, source)
        printed = self._print("cancel", by.actor, why)
        return self._decide(
            lesson_id, lambda slot: _on(slot, lesson_id, lambda s: s.cancel(by, why, printed))
        )

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
        # Sealed together: the keys of every student and date in the batch found at once.
        sealed = iter(self._sealed([c for c in commands if isinstance(c, RequestLesson)]))
        commands = [next(sealed) if isinstance(c, RequestLesson) else c for c in commands]
        return self._batches.run(commands, mode=mode, batch_id=batch_id)

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
                commands.append(
                    self._sealed_row(validate_import(row, actor=actor, correlation_id=batch_id))
                )
            except InvalidLessonRequest as invalid:
                commands.append(invalid)
        return self._batches.run(
            commands, mode="dry-run" if dry_run else "partial", batch_id=batch_id
        )

    # Queries.

    def get_lesson(self, lesson_id: UUID) -> LessonState | None:
        """The slot's current state from its events, its students' parts and content
        opened (an erased one as None), or None for an unknown id."""
        slot = self.slots.load(lesson_id)
        return self.readable(slot.state()) if slot else None

    def readable(self, state: LessonState) -> LessonState:
        """A state with its students' parts and content opened (an erased part, or content
        made for an erased student, as None)."""
        data = self.student_data
        students = (
            None if state.students is None else data.open_students(state.lesson_id, state.students)
        )
        content = (
            None if state.content is None else data.open_content(state.lesson_id, state.content)
        )
        return replace(state, students=students, content=content)

    def readable_content(
        self, lesson_id: UUID, content: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """A lesson's content (as the read model holds it, sealed) opened; None when erased."""
        return None if content is None else self.student_data.open_content(lesson_id, content)

    def history(
        self,
        lesson_id: UUID,
        as_of_version: int | None = None,
        as_of: datetime | None = None,
    ) -> LessonHistory:
        """The slot's events and rejected attempts in order, and its state as it was then."""
        events = list(self.slots.events(lesson_id, as_of_version))
        if as_of is not None:
            events = [e for e in events if e.timestamp <= as_of]
        if not events:
            known = as_of_version is not None or as_of is not None
            if known and self.slots.load(lesson_id) is not None:
                return LessonHistory(lesson_id, [], None)
            raise LessonNotFound(f"no lesson has the id {lesson_id}")
        return history_of(
            lesson_id, events, self.readable, self.readable_content, self.student_data.open_students
        )

    def __enter__(self) -> LessonLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the store's connections."""
        if self.invalid_requests is not None:
            self.invalid_requests.close()
        self.student_data.close()
        self.slots.close()

    # Sealing.

    def _print(self, command: str, actor: str, *payload: object) -> Fingerprint:
        return Fingerprint.of(command, actor, *payload, key=self.student_data.print_key)

    def _sealed(self, requests: list[RequestLesson]) -> list[RequestLesson]:
        """The requests, each printed from what it carries, then their students' parts
        sealed (together: one look-up of every key they need)."""
        parts = [(r.key, r.students) for r in requests if r.students is not None]
        sealed = iter(self.student_data.seal_students(parts))
        return [
            r.sealed(
                None if r.students is None else next(sealed),
                self._print("request", r.actor, r.details, r.students),
            )
            for r in requests
        ]

    def _sealed_row(self, row: ImportLesson) -> ImportLesson:
        """A legacy row, printed, then its content sealed (under the lesson date's key:
        it names no students)."""
        # The row is the same row whoever runs the import again: no actor in its print.
        printed = self._print("import", "", row.legacy_id, row.content)
        content = row.content
        if content is not None:
            key = row.key
            content = self.student_data.seal_content(key.lesson_id, key.lesson_date, [], content)
        return replace(row, content=content, fingerprint=printed)

    # Refused input.

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

    # Deciding and saving.

    def _decide(
        self,
        lesson_id: UUID,
        decide_on: Callable[[LessonSlot | None], tuple[Decided, Decision]],
        *,
        presume_new: bool = False,
    ) -> CommandResult:
        for attempt in range(self.MAX_RACE_RETRIES):
            # Most requests are for new slots: try that first without reading, so the
            # usual request is one round trip; the store refuses it if the slot exists.
            loaded = None if presume_new and attempt == 0 else self.slots.load(lesson_id)
            try:
                decided, decision = decide_on(loaded)
            except DomainRejection:
                # The rejection is part of the slot's history: record it, then answer.
                if loaded is not None and self.slots.save(loaded) is None:
                    continue
                raise
            if decision.outcome == "replayed":
                return CommandResult(lesson_id, "replayed", decision.attempt, None)
            positions = self.slots.save(decided)
            if positions is not None:
                return CommandResult(lesson_id, "accepted", decision.attempt, positions[lesson_id])
        raise LedgerUnavailable(f"lesson {lesson_id}: too much contention, try again")


def _on(
    slot: LessonSlot | None, lesson_id: UUID, command: Callable[[LessonSlot], Decision]
) -> tuple[Decided, Decision]:
    """A command on an existing slot (LessonNotFound for an unknown one)."""
    if slot is None:
        raise LessonNotFound(f"no lesson has the id {lesson_id}")
    return slot, command(slot)


def _checked_metadata(
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


def _required_reason(value: object) -> str:
    reason = check_reason(value)
    if reason is None:
        raise ValueError("is missing: say why generating the lesson failed")
    return reason


def _batch_item(item: Mapping[str, Any], batch_id: str | None) -> dict[str, Any]:
    fields = dict(item)
    if batch_id is not None:
        fields.setdefault("correlation_id", batch_id)
    unknown = sorted(fields.keys() - REQUEST_FIELDS)
    if unknown:
        raise InvalidLessonRequest(
            [FieldError(field=name, message="is not a known field") for name in unknown]
        )
    for name in ("provider_id", "school_id", "lesson_date", "request_id", "actor"):
        fields.setdefault(name, None)
    return fields
