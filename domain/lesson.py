"""The lesson slot: one aggregate per canonical key, holding the whole lifecycle.

States: requested -> generated | failed -> (regenerate) requested ..., and cancelled
from any of them, after which the slot can be requested again. Each request starts
an attempt (1, 2, ...). A command the rules turn away is recorded as a
RequestRejected event before the error is raised, so the slot's history shows
who else tried to claim it, when, and why they were turned away.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NoReturn

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.errors import (
    DomainRejection,
    FieldError,
    Holder,
    IdempotencyMismatch,
    InvalidLessonRequest,
    LessonConflict,
    StaleGeneration,
)
from domain.fingerprint import Fingerprint
from domain.keys import LessonKey
from domain.sealed import plain_content, plain_parts
from domain.state import Command, Decision, LessonState, Metadata, Status


class LessonSlot(Aggregate):
    """A lesson slot, keyed by (provider, school, date, time slot)."""

    class Event(Aggregate.Event):
        """What every event of a slot records: who did it, for which request, from where."""

        request_id: str
        actor: str
        correlation_id: str | None
        source: str
        as_sent: dict[str, str] | None

    class Opened(Aggregate.Created, Event):
        """A slot comes into being with its canonical key (an import opens slots so)."""

        class_version = 1
        provider_id: str
        school_id: str
        lesson_date: date
        time_slot: str

    class LessonRequested(Event):
        """A request claims the slot and starts an attempt (also a regeneration: `reason`).
        Each student's part is sealed under keys of its own (see `PLAIN`)."""

        class_version = 2
        attempt: int
        details: dict[str, Any] | None
        students: list[dict[str, Any]] | None
        fingerprint: str
        reason: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """`students` became sealed parts: an earlier event's plain parts read as
            `{"plain": part}` until `lesson-ledger students encrypt-existing` seals them."""
            state["students"] = plain_parts(state["students"])

        def apply(self, slot: LessonSlot) -> None:
            slot.status = "requested"
            slot.attempt = self.attempt
            slot.holder = (self.request_id, self.actor, self.timestamp, self.correlation_id)
            slot.details, slot.students = self.details, self.students
            slot.content = slot.model = slot.generated_at = slot.failure_reason = None
            slot.cancel_reason = None
            slot.seen_requests[self.request_id] = (self.fingerprint, self.attempt)

    class OpenedByRequest(Opened, LessonRequested):
        """A new slot and its first request in one event: a new lesson is one write.
        (Slots opened by an import, or recorded before this event existed, begin with
        Opened instead.)"""

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """`students` became sealed parts, as in LessonRequested version 2."""
            state["students"] = plain_parts(state["students"])

    class LessonGenerated(Event):
        """The generated lesson of an attempt, recorded by the worker; its content sealed
        so that erasing any student of the lesson makes it unreadable too."""

        class_version = 3
        attempt: int
        content: dict[str, Any]
        model: str
        usage: dict[str, int] | None = None
        """Tokens the attempt used (prompt_tokens, completion_tokens, total_tokens), or
        None (the template, or an event recorded before usage was kept)."""

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """`content` became sealed: an earlier event's reads as `{"plain": content}`."""
            state["content"] = plain_content(state["content"])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """`usage` was added: an earlier event's reads as None (not known)."""
            state["usage"] = None

        def apply(self, slot: LessonSlot) -> None:
            slot.status = "generated"
            slot.content, slot.model, slot.generated_at = self.content, self.model, self.timestamp

    class GenerationFailed(Event):
        """Generating an attempt failed, and why (no student detail in the reason)."""

        class_version = 1
        attempt: int
        reason: str

        def apply(self, slot: LessonSlot) -> None:
            slot.status = "failed"
            slot.failure_reason = self.reason

    class LessonCancelled(Event):
        """The lesson is cancelled: the slot is free to be requested again."""

        class_version = 1
        attempt: int
        fingerprint: str
        reason: str | None

        def apply(self, slot: LessonSlot) -> None:
            slot.status = "cancelled"
            slot.cancel_reason = self.reason
            slot.seen_requests[self.request_id] = (self.fingerprint, self.attempt)

    class LessonImported(Event):
        """A row of the old lessons table, brought into the ledger with its legacy id; its
        content sealed (under the lesson date's key: retention reaches it)."""

        class_version = 2
        legacy_id: str
        content: dict[str, Any] | None
        legacy_created_at: datetime | None
        legacy_updated_at: datetime | None
        flags: list[str]
        fingerprint: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """`content` became sealed, as in LessonGenerated version 2."""
            state["content"] = plain_content(state["content"])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """`usage` was added: an earlier event's reads as None (not known)."""
            state["usage"] = None

        def apply(self, slot: LessonSlot) -> None:
            slot.status = "generated" if self.content else "requested"
            slot.attempt = 1
            requested_at = self.legacy_created_at or self.timestamp
            slot.holder = (self.request_id, self.actor, requested_at, self.correlation_id)
            slot.content = self.content
            slot.model = "legacy" if self.content else None
            slot.generated_at = (self.legacy_updated_at or requested_at) if self.content else None
            slot.legacy_id, slot.flags = self.legacy_id, self.flags
            slot.seen_requests[self.request_id] = (self.fingerprint, 1)

    class RequestRejected(Event):
        """A command turned away: kept so the audit trail shows every attempt."""

        class_version = 1
        command: str
        reason: str
        message: str
        attempt: int
        holder_request_id: str | None
        holder_actor: str | None
        holder_status: str

        def apply(self, slot: LessonSlot) -> None:
            slot.refused_requests.add(self.request_id)  # otherwise it changes nothing

    def __init__(self, provider_id: str, school_id: str, lesson_date: date, time_slot: str) -> None:
        self.provider_id = provider_id
        self.school_id = school_id
        self.lesson_date = lesson_date
        self.time_slot = time_slot
        self.status: Status = "new"
        self.attempt = 0
        self.holder: tuple[str, str, datetime, str | None] | None = None
        self.details: dict[str, Any] | None = None
        self.students: list[dict[str, Any]] | None = None
        self.content: dict[str, Any] | None = None
        self.model: str | None = None
        self.generated_at: datetime | None = None
        self.failure_reason: str | None = None
        self.cancel_reason: str | None = None
        # request_id -> (fingerprint of the command, attempt it started or ended)
        self.seen_requests: dict[str, tuple[str, int]] = {}
        self.legacy_id: str | None = None
        self.flags: list[str] = []
        # Request ids already turned away, so a re-run import records a collision once.
        self.refused_requests: set[str] = set()

    @classmethod
    def open(cls, key: LessonKey, by: Metadata) -> LessonSlot:
        """A new slot for this key, not yet requested."""
        return cls._create(
            cls.Opened,
            id=key.lesson_id,
            provider_id=key.provider_id,
            school_id=key.school_id,
            lesson_date=key.lesson_date,
            time_slot=key.time_slot,
            **by.fields(),
        )

    @classmethod
    def first_request(
        cls,
        key: LessonKey,
        by: Metadata,
        details: dict[str, Any] | None,
        students: list[dict[str, Any]] | None,
        fingerprint: Fingerprint,
    ) -> LessonSlot.OpenedByRequest:
        """What a request for a slot nobody has opened decides: the event that opens it
        with attempt 1. Built without the slot (`event.mutate(None)` builds it when
        wanted): most requests are for new slots, and this is their whole decision."""
        # A dict, as the event classes become dataclasses at runtime (their metaclass),
        # where mypy cannot see their fields.
        fields: dict[str, Any] = {
            "originator_id": key.lesson_id,
            "originator_version": 1,
            "timestamp": cls.OpenedByRequest.create_timestamp(),
            "originator_topic": _SLOT_TOPIC,
            "provider_id": key.provider_id,
            "school_id": key.school_id,
            "lesson_date": key.lesson_date,
            "time_slot": key.time_slot,
            "attempt": 1,
            "details": details,
            "students": students,
            "fingerprint": fingerprint.text,
            "reason": None,
            **by.fields(),
        }
        # Set as the library's mapper sets an event read from storage: the frozen
        # dataclass __init__ would set each field through object.__setattr__ (half the
        # cost of building the event). Every field is above; the id is a UUID.
        event = object.__new__(cls.OpenedByRequest)
        object.__setattr__(event, "__dict__", fields)
        return event

    @property
    def key(self) -> LessonKey:
        return LessonKey(self.provider_id, self.school_id, self.lesson_date, self.time_slot)

    # Commands. Each returns its Decision, or records a RequestRejected event and
    # raises a DomainRejection. A command's fingerprint comes with it (the ledger makes
    # it, keyed, from what the command carried before its students' details were sealed).

    def request(
        self,
        by: Metadata,
        details: dict[str, Any] | None,
        students: list[dict[str, Any]] | None,
        fingerprint: Fingerprint,
    ) -> Decision:
        if replayed := self._replayed(by, fingerprint, "request"):
            return replayed
        if self.status not in ("new", "cancelled"):
            conflict = self._conflict("the slot is already held")
            if by.request_id in self.refused_requests:
                raise conflict  # the same request again (a retry): recorded once
            self._reject("request", by, conflict)
        self._start_attempt(by, details, students, fingerprint.text, reason=None)
        return Decision("accepted", self.attempt)

    def regenerate(self, by: Metadata, reason: str | None, fingerprint: Fingerprint) -> Decision:
        if replayed := self._replayed(by, fingerprint, "regenerate"):
            return replayed
        if self.status not in ("generated", "failed"):
            self._reject(
                "regenerate",
                by,
                self._conflict("only a generated or failed lesson can be regenerated"),
            )
        self._start_attempt(by, self.details, self.students, fingerprint.text, reason)
        return Decision("accepted", self.attempt)

    def cancel(self, by: Metadata, reason: str | None, fingerprint: Fingerprint) -> Decision:
        if replayed := self._replayed(by, fingerprint, "cancel"):
            return replayed
        if self.status not in ("requested", "generated", "failed"):
            self._reject(
                "cancel",
                by,
                self._conflict("only a requested, generated or failed lesson can be cancelled"),
            )
        self.trigger_event(
            self.LessonCancelled,
            attempt=self.attempt,
            fingerprint=fingerprint.text,
            reason=reason,
            **by.fields(),
        )
        return Decision("accepted", self.attempt)

    def import_legacy(
        self,
        by: Metadata,
        legacy_id: str,
        content: dict[str, Any] | None,
        created_at: datetime | None,
        updated_at: datetime | None,
        flags: list[str],
        fingerprint: Fingerprint,
    ) -> Decision:
        """A legacy row into a new slot; on a held slot it is a collision, reported and
        never merged (and recorded once, however often the import is re-run)."""
        if replayed := self._replayed(by, fingerprint, "import"):
            return replayed
        if self.status != "new":
            conflict = self._conflict(f"legacy row {legacy_id!r} collides with this lesson")
            if by.request_id in self.refused_requests:
                raise conflict
            self._reject("import", by, conflict)
        self.trigger_event(
            self.LessonImported,
            legacy_id=legacy_id,
            content=content,
            legacy_created_at=created_at,
            legacy_updated_at=updated_at,
            flags=flags,
            fingerprint=fingerprint.text,
            **by.fields(),
        )
        return Decision("accepted", self.attempt)

    def turn_away(self, command: Command, by: Metadata, rejection: DomainRejection) -> None:
        """Record a command turned away before any rule was asked: a batch's later item for
        this slot. Once per request id: a batch sent again records its duplicates once."""
        if by.request_id in self.refused_requests:
            return
        self._record_rejection(command, by, rejection)

    def record_generation(
        self,
        attempt: int,
        content: dict[str, Any],
        model: str,
        actor: str,
        usage: dict[str, int] | None = None,
    ) -> Decision:
        if self._attempt_decided(attempt, "record_generation", actor):
            return Decision("replayed", attempt)
        self.trigger_event(
            self.LessonGenerated,
            attempt=attempt,
            content=content,
            model=model,
            usage=usage,
            **self._worker(actor).fields(),
        )
        return Decision("accepted", attempt)

    def record_failure(self, attempt: int, reason: str, actor: str) -> Decision:
        if self._attempt_decided(attempt, "record_failure", actor):
            return Decision("replayed", attempt)
        self.trigger_event(
            self.GenerationFailed, attempt=attempt, reason=reason, **self._worker(actor).fields()
        )
        return Decision("accepted", attempt)

    # Queries.

    def current_holder(self) -> Holder | None:
        if self.holder is None:
            return None
        request_id, actor, requested_at, _ = self.holder
        return Holder(request_id, actor, requested_at, self.status, self.attempt)

    def state(self) -> LessonState:
        request_id, actor, requested_at, correlation_id = self.holder or (None, None, None, None)
        return LessonState(
            lesson_id=self.id,
            provider_id=self.provider_id,
            school_id=self.school_id,
            lesson_date=self.lesson_date,
            time_slot=self.time_slot,
            kind=self.key.kind,
            status=self.status,
            attempt=self.attempt,
            request_id=request_id,
            requested_by=actor,
            requested_at=requested_at,
            correlation_id=correlation_id,
            details=self.details,
            students=self.students,
            content=self.content,
            model=self.model,
            generated_at=self.generated_at,
            failure_reason=self.failure_reason,
            cancel_reason=self.cancel_reason,
            version=self.version,
            updated_at=self.modified_on,
            legacy_id=self.legacy_id,
            flags=tuple(self.flags),
        )

    # The rules.

    def _replayed(
        self, by: Metadata, fingerprint: Fingerprint, command: Command
    ) -> Decision | None:
        """A replay when this request id already did exactly this; a different command
        or different details under a used request id is turned away."""
        seen = self.seen_requests.get(by.request_id)
        if seen is None:
            return None
        if fingerprint.matches(seen[0]):
            return Decision("replayed", seen[1])
        self._reject(
            command,
            by,
            IdempotencyMismatch(
                f"request_id {by.request_id!r} was already used on this lesson for a different "
                "command or different details; use a new request_id for a new request",
                by.request_id,
            ),
        )

    def _attempt_decided(self, attempt: int, command: Command, actor: str) -> bool:
        """True when this attempt already has its result; stale attempts are turned away."""
        if attempt > self.attempt:
            raise InvalidLessonRequest(
                [
                    FieldError(
                        field="attempt",
                        message=f"attempt {attempt} has not started; "
                        f"the current attempt is {self.attempt}",
                    )
                ]
            )
        if attempt < self.attempt:
            self._reject(
                command,
                self._worker(actor),
                StaleGeneration(
                    f"attempt {attempt} is stale: attempt {self.attempt} is the current one",
                    attempt,
                    self.attempt,
                ),
            )
        if self.status == "cancelled":
            self._reject(
                command,
                self._worker(actor),
                StaleGeneration(f"attempt {attempt} was cancelled", attempt, self.attempt),
            )
        return self.status in ("generated", "failed")

    def _start_attempt(
        self,
        by: Metadata,
        details: dict[str, Any] | None,
        students: list[dict[str, Any]] | None,
        fingerprint: str,
        reason: str | None,
    ) -> None:
        self.trigger_event(
            self.LessonRequested,
            attempt=self.attempt + 1,
            details=details,
            students=students,
            fingerprint=fingerprint,
            reason=reason,
            **by.fields(),
        )

    def _conflict(self, why: str) -> LessonConflict:
        holder = self.current_holder()
        assert holder is not None, "an opened slot always has a holder"
        return LessonConflict(
            f"lesson {self.id}: {why}; it is {holder.status} for request "
            f"{holder.request_id!r} by {holder.actor!r} since "
            f"{holder.requested_at.isoformat()} (attempt {holder.attempt})",
            holder,
        )

    def _reject(self, command: Command, by: Metadata, rejection: DomainRejection) -> NoReturn:
        self._record_rejection(command, by, rejection)
        raise rejection

    def _record_rejection(self, command: Command, by: Metadata, rejection: DomainRejection) -> None:
        holder = self.current_holder()
        self.trigger_event(
            self.RequestRejected,
            command=command,
            reason=rejection.reason,
            message=str(rejection),
            attempt=self.attempt,
            holder_request_id=holder.request_id if holder else None,
            holder_actor=holder.actor if holder else None,
            holder_status=self.status,
            **by.fields(),
        )

    def _worker(self, actor: str) -> Metadata:
        """A generation result is recorded under the request id of the attempt it fulfils."""
        request_id, _, _, correlation_id = self.holder or ("", "", None, None)
        return Metadata(request_id, actor, correlation_id, source="worker")


_SLOT_TOPIC = get_topic(LessonSlot)

Decided = LessonSlot | LessonSlot.OpenedByRequest
"""What a command decided: a slot with pending events, or a new slot's opening event."""
