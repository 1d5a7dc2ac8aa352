"""The `openai` generator: any OpenAI-compatible chat completions endpoint
(`POST {base_url}/chat/completions`), through httpx.

One attempt makes up to `openai_max_tries` calls. Retried, with exponential backoff and
full jitter (a 429's Retry-After is honoured, capped by the maximum backoff): 408, 429
and 5xx answers, timeouts, connection errors, and answers whose content is not a lesson
(malformed JSON, or JSON the GeneratedLesson model refuses: a language model that wrote
a broken answer often writes a good one when asked again). Not retried: other 4xx
answers (a bad key or model name does not heal). After the last try the attempt fails,
and the reason names the last problem and the number of tries.

What leaves the process: the lesson's details and, per student (numbered, never by id
or name), grade, reading level, IEP goals and accommodations; the attempt
(`<lesson_id>/<attempt>`) in the `X-Lesson-Ledger-Attempt` header. What is logged:
lesson id, attempt, try, status or error kind, delays. Never the prompt, the answer,
student data or the key; failure reasons never quote the answer either.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from adapters.generators.settings import GeneratorConfigError, GeneratorSettings
from projections.generation.port import (
    EARLY_YEARS,
    GeneratedLesson,
    GenerationError,
    GenerationInterrupted,
    GenerationMetadata,
    GenerationRequest,
    LessonDraft,
    grade_label,
    grade_name,
)

log = logging.getLogger("lesson_ledger.generator")

ATTEMPT_HEADER = "X-Lesson-Ledger-Attempt"
_RETRIED_STATUS = frozenset({408, 429})
_OPENAI_HOST = "api.openai.com"

SYSTEM_PROMPT = """\
You write lesson plans for special-education providers (resource teachers, occupational
therapists, speech-language pathologists, counselors). Answer with one JSON object and
nothing else, in exactly this shape:
{"lesson": {"title": str, "duration": int (minutes), "objectives": [str],
  "materials": [str], "overview": str,
  "introduction": {"description": str, "duration": int, "instructions": [str],
                   "materials": [str]},
  "activity": {"description": str, "duration": int, "instructions": [str],
               "materials": [str]}},
 "worksheet": {"title": str, "instructions": str,
               "items": [{"prompt": str, "answer": str or null}]}}
The introduction and activity durations add up to the lesson's duration. Adapt the
lesson to the students described, but never quote their IEP goals or accommodations and
never refer to an individual student: write for the group."""


class OpenAIGenerator:
    """Generates lessons with an OpenAI-compatible endpoint; safe to call from threads."""

    def __init__(
        self,
        settings: GeneratorSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        base_url = settings.openai_base_url.rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise GeneratorConfigError(
                f"LESSON_LEDGER_OPENAI_BASE_URL must be an http(s) URL, not {base_url!r}"
            )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        if not key and httpx.URL(base_url).host == _OPENAI_HOST:
            raise GeneratorConfigError(
                "the openai generator needs LESSON_LEDGER_OPENAI_API_KEY for api.openai.com"
            )
        if not settings.openai_model.strip():
            raise GeneratorConfigError("LESSON_LEDGER_OPENAI_MODEL is empty")
        self.settings = settings
        self._url = f"{base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                settings.openai_timeout_seconds, connect=settings.openai_connect_timeout_seconds
            ),
            transport=transport,
        )
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._closed = threading.Event()

    @property
    def model(self) -> str:
        return self.settings.openai_model

    def generate(self, request: GenerationRequest) -> GeneratedLesson:
        started = time.perf_counter()
        body = self._body(request)
        tries = self.settings.openai_max_tries
        problem = ""
        for number in range(1, tries + 1):
            if self._closed.is_set():
                raise GenerationInterrupted("the generator was closed")
            outcome = self._try(request, body, number)
            if isinstance(outcome, GeneratedLesson):
                return outcome.model_copy(
                    update={
                        "metadata": outcome.metadata.model_copy(
                            update={"generation_seconds": round(time.perf_counter() - started, 3)}
                        )
                    }
                )
            problem, retry_after = outcome
            if number < tries:
                delay = self._backoff(number, retry_after)
                log.warning(
                    "generation retry",
                    extra={
                        "lesson_id": str(request.lesson_id),
                        "attempt": request.attempt,
                        "try": number,
                        "problem": problem,
                        "retry_in_seconds": round(delay, 3),
                    },
                )
                if self._closed.wait(delay):
                    raise GenerationInterrupted("the generator was closed")
        tried = "1 try" if tries == 1 else f"{tries} tries"
        raise GenerationError(f"openai: {problem} (after {tried})")

    def close(self) -> None:
        self._closed.set()
        self._client.close()

    # One call.

    def _try(
        self, request: GenerationRequest, body: dict[str, Any], number: int
    ) -> GeneratedLesson | tuple[str, float | None]:
        """The lesson, or (a retryable problem, the server's Retry-After); raises
        GenerationError for an answer that retrying cannot fix."""
        try:
            response = self._client.post(
                self._url, json=body, headers={ATTEMPT_HEADER: request.attempt_key}
            )
        except httpx.TimeoutException as error:
            return f"timed out ({type(error).__name__})", None
        except (httpx.TransportError, RuntimeError) as error:
            # A closed client raises RuntimeError; so may a transport torn down by close().
            if self._closed.is_set():
                raise GenerationInterrupted("the generator was closed") from None
            if isinstance(error, RuntimeError):
                raise
            return f"connection failed ({type(error).__name__})", None
        status = response.status_code
        if status == 200:
            try:
                return self._lesson(response)
            except ValueError as error:
                return f"invalid answer: {error}", None
        if status in _RETRIED_STATUS or status >= 500:
            return f"HTTP {status}{_error_code(response)}", _retry_after(response)
        log.error(
            "generation refused",
            extra={
                "lesson_id": str(request.lesson_id),
                "attempt": request.attempt,
                "try": number,
                "status": status,
            },
        )
        raise GenerationError(f"openai: HTTP {status}{_error_code(response)} (not retried)")

    def _lesson(self, response: httpx.Response) -> GeneratedLesson:
        """The answer's lesson, validated; ValueError says what is wrong without quoting."""
        try:
            answer = response.json()
            content = answer["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ValueError("not a chat completion") from None
        if not isinstance(content, str):
            raise ValueError("the message has no text content")
        try:
            data = json.loads(_without_fences(content))
        except ValueError as error:
            raise ValueError(f"the content is not JSON ({type(error).__name__})") from None
        try:
            draft = LessonDraft.model_validate(data)
        except ValidationError as invalid:
            first = invalid.errors(include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "the answer"
            raise ValueError(
                f"the lesson JSON does not validate ({invalid.error_count()} error(s), "
                f"first at {where}: {first['msg']})"
            ) from None
        model = answer.get("model")
        return GeneratedLesson(
            lesson=draft.lesson,
            worksheet=draft.worksheet,
            metadata=GenerationMetadata(
                generated_at=self._clock(),
                model=model if isinstance(model, str) and model else self.model,
                generation_seconds=0.0,
            ),
        )

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.openai_model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt(request)},
            ],
            "temperature": self.settings.openai_temperature,
        }
        if self.settings.openai_json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _backoff(self, number: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(n-1))]; at least Retry-After."""
        cap = self.settings.openai_max_backoff_seconds
        with self._rng_lock:
            ceiling = min(cap, self.settings.openai_backoff_seconds * 2 ** (number - 1))
            delay = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay


def user_prompt(request: GenerationRequest) -> str:
    """The request's details as text. Students are numbered: their ids are not known here."""
    lines = [
        f"Subject: {request.subject}",
        f"Subject type: {request.subject_type or 'not given'}",
        f"Teacher role: {request.teacher_role or 'not given'}",
        f"Topic: {request.topic or request.subject}",
        f"Duration: {request.duration} minutes",
        f"Grade levels: {grade_label(request.grades)}",
    ]
    if request.early_years:
        lines.append(EARLY_YEARS_NOTE)
    if request.focus_skills:
        lines.append(f"Focus skills: {', '.join(request.focus_skills)}")
    lines.append(f"Students ({len(request.learners)}):")
    for number, learner in enumerate(request.learners, start=1):
        parts = [_grade(learner.grade)]
        if learner.reading_level:
            parts.append(f"reading level {learner.reading_level}")
        if learner.iep_goals:
            parts.append(f"IEP goals: {'; '.join(learner.iep_goals)}")
        if learner.accommodations:
            parts.append(f"accommodations: {'; '.join(learner.accommodations)}")
        lines.append(f"- Student {number}: {', '.join(parts)}")
    return "\n".join(lines)


EARLY_YEARS_NOTE = (
    "Some students are in pre-K (pre-kindergarten, ages 3-4) or TK (transitional "
    "kindergarten, ages 4-5): they do not read or write yet. Write for them: picture, "
    "spoken and hands-on tasks (point, say, sort, count objects, draw), no written answers."
)


def _grade(grade: int) -> str:
    """A student's grade for the prompt: "grade 3", "grade K", "pre-K (pre-kindergarten)"."""
    if grade in EARLY_YEARS:
        return f"{grade_name(grade)} ({EARLY_YEARS[grade]})"
    return f"grade {grade_name(grade)}"


def _without_fences(content: str) -> str:
    """Models sometimes wrap JSON in a ```json fence despite being asked not to."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date, or nothing: the backoff decides
    return seconds if seconds >= 0 else None


def _error_code(response: httpx.Response) -> str:
    """The provider's error type/code (not its message, which may echo the request)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    code = error.get("code") or error.get("type")
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return f" ({code})"
    return ""
