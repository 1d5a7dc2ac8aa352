"""One requested attempt, generated and recorded: the work of each of the worker's threads.

Before generating, the slot is loaded: an attempt already decided, superseded by a newer
attempt, or cancelled is finished without generating. Failures of the generator become
the attempt's recorded failure; failures of the database do not: the call is retried
(0.5 s doubling to 30 s) until the ledger answers or the worker stops, and a stopping
worker leaves the attempt unfinished, for the next worker to generate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
from projections.generation.port import (
    GeneratedLesson,
    GenerationError,
    GenerationInterrupted,
    GenerationRequest,
    LessonGenerator,
)
from projections.generation.window import Job

log = logging.getLogger("lesson_ledger.worker")

Outcome = Literal["generated", "failed", "replayed", "stale", "skipped", "unfinished"]
T = TypeVar("T")
_MAX_REASON_LENGTH = 2000


class _Stopping(Exception):
    """The worker is stopping while a job waits for the database: leave it unfinished."""


class Attempts:
    """Generates and records attempts with a generator, on the ledger, as `actor`;
    `stop` set means: leave what waits for the database unfinished."""

    def __init__(
        self,
        ledger: LessonLedger,
        generator: LessonGenerator,
        actor: str,
        stop: threading.Event,
    ) -> None:
        self.ledger = ledger
        self.generator = generator
        self.actor = actor
        self._stop = stop

    def process(self, job: Job) -> Outcome:
        """Generate and record one attempt; the outcome says whether it is finished."""
        try:
            return self._process(job)
        except Exception as error:  # a bug must not kill the thread or move the position
            log.error(
                "generation job error", extra={**job_fields(job), "error": type(error).__name__}
            )
            return "unfinished"

    def _process(self, job: Job) -> Outcome:
        """Generate and record one attempt; the outcome says whether it is finished."""
        try:
            state = self._with_ledger(lambda: self._current(job))
        except _Stopping:
            return "unfinished"
        skip = _skip_reason(job, state)
        if skip is not None:
            log.info("generation skipped", extra={**job_fields(job), "reason": skip})
            return "skipped"
        assert state is not None
        started = time.perf_counter()
        lesson: GeneratedLesson | None = None
        reason = ""
        if not state.details or not state.students:
            # A generic lesson for nobody would look like a success; a failure says why.
            reason = "the request has no details (subject, students) to generate a lesson from"
            return self._recorded(job, None, reason, 0.0)
        if not any(student is not None for student in state.students):
            reason = "every student of the request was erased: nothing to generate for"
            return self._recorded(job, None, reason, 0.0)
        try:
            lesson = self.generator.generate(GenerationRequest.from_state(state))
        except GenerationInterrupted:
            return "unfinished"
        except GenerationError as error:
            reason = str(error)
        except Exception as error:
            if self._stop.is_set():
                return "unfinished"
            # A generator bug fails the attempt (visible, and regenerable) rather than
            # blocking the position forever; its message may quote content, its type not.
            reason = f"generator error: {type(error).__name__}"
        return self._recorded(job, lesson, reason, round(time.perf_counter() - started, 3))

    def _recorded(
        self, job: Job, lesson: GeneratedLesson | None, reason: str, seconds: float
    ) -> Outcome:
        try:
            return self._record(job, lesson, reason, seconds)
        except _Stopping:
            return "unfinished"

    def _current(self, job: Job) -> LessonState | None:
        state = self.ledger.get_lesson(job.lesson_id)
        if state is not None and state.attempt < job.attempt:
            # The event is in the log, so the slot has it; only a lagging replica could
            # show an older state. Retry as for an outage.
            raise LedgerUnavailable(f"lesson {job.lesson_id} does not show attempt {job.attempt}")
        return state

    def _record(
        self, job: Job, lesson: GeneratedLesson | None, reason: str, seconds: float
    ) -> Outcome:
        fields = {**job_fields(job), "seconds": seconds}
        try:
            if lesson is not None:
                try:
                    return self._record_lesson(job, lesson, fields)
                except InvalidLessonRequest as invalid:
                    bad = ", ".join(error["field"] for error in invalid.errors)
                    reason = f"the ledger refused the generated lesson ({bad})"
            return self._record_failure(job, reason[:_MAX_REASON_LENGTH], fields)
        except StaleGeneration as stale:
            # Regenerated or cancelled while this attempt was generating: it is done.
            log.info("generation stale", extra={**fields, "current_attempt": stale.current_attempt})
            return "stale"
        except LessonNotFound:
            log.warning("generation skipped", extra={**fields, "reason": "unknown lesson"})
            return "skipped"

    def _record_lesson(
        self, job: Job, lesson: GeneratedLesson, fields: dict[str, object]
    ) -> Outcome:
        content, model = lesson.content(), lesson.metadata.model
        result = self._with_ledger(
            lambda: self.ledger.record_generation(
                lesson_id=job.lesson_id,
                attempt=job.attempt,
                content=content,
                model=model,
                actor=self.actor,
            )
        )
        if result.outcome == "replayed":
            log.info("generation replayed", extra=fields)
            return "replayed"
        log.info("lesson generated", extra={**fields, "model": model})
        return "generated"

    def _record_failure(self, job: Job, reason: str, fields: dict[str, object]) -> Outcome:
        reason = reason or "generation failed"
        result = self._with_ledger(
            lambda: self.ledger.record_failure(
                lesson_id=job.lesson_id, attempt=job.attempt, reason=reason, actor=self.actor
            )
        )
        if result.outcome == "replayed":
            log.info("generation replayed", extra=fields)
            return "replayed"
        log.warning("generation failed", extra={**fields, "reason": reason})
        return "failed"

    def _with_ledger(self, call: Callable[[], T]) -> T:
        """Run a ledger call, retrying through outages until it answers or we stop."""
        delay = FIRST_RETRY_SECONDS / 2
        while True:
            try:
                return call()
            except LedgerUnavailable as error:
                if self._stop.is_set():
                    raise _Stopping from None
                log.warning("ledger unavailable", extra={"error": one_line(error)})
                if self._stop.wait(delay):
                    raise _Stopping from None
                delay = min(delay * 2, MAX_RETRY_SECONDS)


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
