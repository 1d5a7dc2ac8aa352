"""One requested attempt, generated and recorded: a task of the worker's event loop.

Before generating, the slot is loaded: an attempt already decided, superseded by a newer
attempt, or cancelled is finished without generating. Then the provider's daily token
cap is checked (projections/generation/budget.py): a provider over it gets the attempt
failed with the cap as its reason, and nothing spent. Failures of the generator become
the attempt's recorded failure; failures of the database do not: the call is retried
(0.5 s doubling to 30 s) until the ledger answers or the worker stops, and a stopping
worker leaves the attempt unfinished, for the next worker to generate. So does a
cancelled task (the worker stopped without waiting for it).

The ledger is synchronous: its calls run in the runtime's small database thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Literal, TypeVar

from domain.errors import (
    InvalidLessonRequest,
    LedgerUnavailable,
    LessonNotFound,
    StaleGeneration,
    one_line,
)
from domain.ledger import LessonLedger
from domain.state import LessonState
from projections.active_runner import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS
from projections.generation.budget import Budget, Reservation, cap_reason
from projections.generation.gate import CallGate, Ticket
from projections.generation.jobs import Job
from projections.generation.port import (
    GeneratedLesson,
    GenerationError,
    GenerationInterrupted,
    GenerationRequest,
    LessonGenerator,
    TokenUsage,
)
from projections.generation.runtime import Runtime

log = logging.getLogger("lesson_ledger.worker")

Outcome = Literal["generated", "failed", "replayed", "stale", "skipped", "unfinished"]
T = TypeVar("T")
_MAX_REASON_LENGTH = 2000


class _Stopping(Exception):
    """The worker is stopping while a job waits for the database: leave it unfinished."""


class Attempts:
    """Generates and records attempts with a generator, on the ledger, as `actor`, in
    the runtime's loop; `stop` set means: leave what waits for the database unfinished.
    `counts` counts outcomes (thread-safe enough: only the loop's thread writes it)."""

    def __init__(
        self,
        ledger: LessonLedger,
        generator: LessonGenerator,
        actor: str,
        stop: threading.Event,
        runtime: Runtime,
        budget: Budget | None = None,
        calls: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.generator = generator
        self.actor = actor
        self.runtime = runtime
        self.budget = budget
        self.counts: Counter[str] = Counter()
        self._stop = stop
        # At most `calls` attempts wait on the generator at once, interactive first; the
        # others may be checking or recording meanwhile (their database work overlaps
        # the calls).
        self._gate = CallGate(calls) if calls else None
        self.on_call_over: Callable[[Job], None] | None = None
        """Told once per attempt when it no longer needs a call slot: its call returned,
        or it ended without one (the claimer then claims the next job at once)."""

    async def process(self, job: Job) -> Outcome:
        """Generate and record one attempt; the outcome says whether it is finished."""
        ticket = self._gate.admit(job.priority) if self._gate is not None else None
        try:
            outcome = await self._process(job, ticket)
        except asyncio.CancelledError:
            outcome = "unfinished"  # the worker stopped without waiting: not lost
        except Exception as error:  # a bug must not kill the loop or move the position
            log.error(
                "generation job error", extra={**job_fields(job), "error": type(error).__name__}
            )
            outcome = "unfinished"
        finally:
            if ticket is not None and self._gate is not None:
                self._gate.done(ticket)
            self._call_over(job)
        self.counts[outcome] += 1
        return outcome

    def _call_over(self, job: Job) -> None:
        if self.on_call_over is not None:
            self.on_call_over(job)

    async def _process(self, job: Job, ticket: Ticket | None) -> Outcome:
        try:
            state = await self._with_ledger(lambda: self._current(job))
        except _Stopping:
            return "unfinished"
        skip = _skip_reason(job, state)
        if skip is not None:
            log.info("generation skipped", extra={**job_fields(job), "reason": skip})
            return "skipped"
        assert state is not None
        if not state.details or not state.students:
            # A generic lesson for nobody would look like a success; a failure says why.
            reason = "the request has no details (subject, students) to generate a lesson from"
            return await self._recorded(job, None, reason, 0.0)
        if not any(student is not None for student in state.students):
            reason = "every student of the request was erased: nothing to generate for"
            return await self._recorded(job, None, reason, 0.0)
        request = GenerationRequest.from_state(state)
        reservation: Reservation | None = None
        if self.budget is not None:
            budget = self.budget
            estimate = self.generator.estimated_tokens(request)
            try:
                if budget.daily_cap is None:  # nothing to hold: no database call
                    reservation = budget.reserve(state.provider_id, estimate)
                else:
                    reservation = await self._with_ledger(
                        lambda: budget.reserve(state.provider_id, estimate)
                    )
            except _Stopping:
                return "unfinished"
            if reservation is None:
                assert budget.daily_cap is not None
                reason = cap_reason(budget.daily_cap, state.provider_id, _today())
                return await self._recorded(job, None, reason, 0.0)
        started = time.perf_counter()
        lesson: GeneratedLesson | None = None
        usage: TokenUsage | None = None
        reason = ""
        try:
            if self._gate is None or ticket is None:
                lesson = await self.generator.generate(request)
            else:
                await self._gate.enter(ticket)
                try:
                    lesson = await self.generator.generate(request)
                finally:
                    self._gate.done(ticket)  # the next may call while this one records
                    self._call_over(job)
            usage = lesson.usage
        except GenerationInterrupted:
            await self._settle(reservation, None)
            return "unfinished"
        except GenerationError as error:
            reason, usage = str(error), error.usage
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(reservation, None))
            raise
        except Exception as error:
            if self._stop.is_set():
                await self._settle(reservation, None)
                return "unfinished"
            # A generator bug fails the attempt (visible, and regenerable) rather than
            # blocking the position forever; its message may quote content, its type not.
            reason = f"generator error: {type(error).__name__}"
        await self._settle(reservation, usage)
        return await self._recorded(job, lesson, reason, round(time.perf_counter() - started, 3))

    async def _settle(self, reservation: Reservation | None, usage: TokenUsage | None) -> None:
        """Count what the attempt used (best effort: the cap errs on the safe side)."""
        if reservation is None or self.budget is None:
            return
        budget, model = self.budget, self.generator.model
        try:
            await self.runtime.db(lambda: budget.settle(reservation, usage, model))
        except Exception as error:
            log.warning("generation usage not counted", extra={"error": one_line(error)})

    async def _recorded(
        self, job: Job, lesson: GeneratedLesson | None, reason: str, seconds: float
    ) -> Outcome:
        try:
            return await self._record(job, lesson, reason, seconds)
        except _Stopping:
            return "unfinished"

    def _current(self, job: Job) -> LessonState | None:
        state = self.ledger.get_lesson(job.lesson_id)
        if state is not None and state.attempt < job.attempt:
            # The event is in the log, so the slot has it; only a lagging replica could
            # show an older state. Retry as for an outage.
            raise LedgerUnavailable(f"lesson {job.lesson_id} does not show attempt {job.attempt}")
        return state

    async def _record(
        self, job: Job, lesson: GeneratedLesson | None, reason: str, seconds: float
    ) -> Outcome:
        fields = {**job_fields(job), "seconds": seconds}
        try:
            if lesson is not None:
                try:
                    return await self._record_lesson(job, lesson, fields)
                except InvalidLessonRequest as invalid:
                    bad = ", ".join(error["field"] for error in invalid.errors)
                    reason = f"the ledger refused the generated lesson ({bad})"
            return await self._record_failure(job, reason[:_MAX_REASON_LENGTH], fields)
        except StaleGeneration as stale:
            # Regenerated or cancelled while this attempt was generating: it is done.
            log.info("generation stale", extra={**fields, "current_attempt": stale.current_attempt})
            return "stale"
        except LessonNotFound:
            log.warning("generation skipped", extra={**fields, "reason": "unknown lesson"})
            return "skipped"

    async def _record_lesson(
        self, job: Job, lesson: GeneratedLesson, fields: dict[str, object]
    ) -> Outcome:
        content, model = lesson.content(), lesson.metadata.model
        usage = lesson.usage.recorded() if lesson.usage is not None else None
        result = await self._with_ledger(
            lambda: self.ledger.record_generation(
                lesson_id=job.lesson_id,
                attempt=job.attempt,
                content=content,
                model=model,
                actor=self.actor,
                usage=usage,
            )
        )
        if result.outcome == "replayed":
            log.info("generation replayed", extra=fields)
            return "replayed"
        tokens = {"tokens": usage["total_tokens"]} if usage else {}
        log.info("lesson generated", extra={**fields, "model": model, **tokens})
        return "generated"

    async def _record_failure(self, job: Job, reason: str, fields: dict[str, object]) -> Outcome:
        reason = reason or "generation failed"
        result = await self._with_ledger(
            lambda: self.ledger.record_failure(
                lesson_id=job.lesson_id, attempt=job.attempt, reason=reason, actor=self.actor
            )
        )
        if result.outcome == "replayed":
            log.info("generation replayed", extra=fields)
            return "replayed"
        log.warning("generation failed", extra={**fields, "reason": reason})
        return "failed"

    async def _with_ledger(self, call: Callable[[], T]) -> T:
        """Run a ledger call in the database pool, retrying through outages until it
        answers or we stop."""
        delay = FIRST_RETRY_SECONDS / 2
        while True:
            try:
                return await self.runtime.db(call)
            except LedgerUnavailable as error:
                if self._stop.is_set():
                    raise _Stopping from None
                log.warning("ledger unavailable", extra={"error": one_line(error)})
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stop.is_set():
                        raise _Stopping from None
                    await asyncio.sleep(min(0.1, delay))
                delay = min(delay * 2, MAX_RETRY_SECONDS)


def _today() -> date:
    return datetime.now(UTC).date()


def _skip_reason(job: Job, state: LessonState | None) -> str | None:
    """Why this attempt needs no generating, or None when it does."""
    if state is None:
        return "unknown lesson"
    if state.attempt > job.attempt:
        return f"superseded by attempt {state.attempt}"
    if state.status == "cancelled":
        return "cancelled"
    if state.status != "requested":
        return f"already {state.status}"
    return None


def job_fields(job: Job) -> dict[str, object]:
    return {
        "lesson_id": str(job.lesson_id),
        "attempt": job.attempt,
        "notification_id": job.notification_id,
    }
