"""The `openai` generator: any OpenAI-compatible chat completions endpoint, through the
official `openai` package's async client (`AsyncOpenAI` with `base_url`).

The package makes the calls and retries them (408, 409, 429, 5xx, timeouts, connection
errors) with its backoff (0.5 s doubling to 8 s, jittered), honouring Retry-After up to
two minutes. We retry answers whose content is not a lesson (malformed JSON, or JSON the
GeneratedLesson model refuses: a model that wrote a broken answer often writes a good
one when asked again). All calls of an attempt together are at most `openai_max_tries`.
After the last, the attempt fails and the reason names the last problem and the calls.

Structured outputs (`openai_structured_outputs`, on by default) send the lesson's JSON
schema, strict, so a model that supports them answers in its shape; without them,
`openai_json_mode` asks for a JSON object.

Every call (the package's retries included) first takes a permit from the rate limiter,
if limits are set (adapters/generators/limits.py), and a 429 with Retry-After pauses the
limiter for everyone sharing it. Tokens used are summed over the attempt's calls.

What leaves the process: the lesson's details and, per student (numbered, never by id
or name), grade, reading level, IEP goals and accommodations; the attempt
(`<lesson_id>/<attempt>`) in the `X-Lesson-Ledger-Attempt` header. What is logged:
lesson id, attempt, call number, status or error kind. Never the prompt, the answer,
student data or the key; failure reasons never quote the answer either. (The package
logs no bodies either; its logger is kept at WARNING by the worker.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from adapters.generators.limits import Permit, RateLimiter
from adapters.generators.settings import GeneratorConfigError, GeneratorSettings
from projections.generation.port import (
    EARLY_YEARS,
    GeneratedLesson,
    GenerationError,
    GenerationMetadata,
    GenerationRequest,
    LessonDraft,
    TokenUsage,
    grade_label,
    grade_name,
)

log = logging.getLogger("lesson_ledger.generator")

ATTEMPT_HEADER = "X-Lesson-Ledger-Attempt"
_OPENAI_HOST = "api.openai.com"
_RETRIED_BY_THE_PACKAGE = frozenset({408, 409, 429})
_MAX_CONNECTIONS = 4096

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


@dataclass
class _Attempt:
    """One attempt's calls, as the HTTP hooks see them (a context variable per task)."""

    request: GenerationRequest
    estimate: int
    calls: int = 0
    permits: list[Permit] = field(default_factory=list)


_current: ContextVar[_Attempt | None] = ContextVar("lesson_ledger_attempt", default=None)


def checked_endpoint(settings: GeneratorSettings) -> tuple[str, str]:
    """The endpoint's base URL and key; GeneratorConfigError, one line, when the settings
    cannot call it."""
    base_url = settings.openai_base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise GeneratorConfigError(
            f"LESSON_LEDGER_OPENAI_BASE_URL must be an http(s) URL, not {base_url!r}"
        )
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if not key and urlsplit(base_url).hostname == _OPENAI_HOST:
        raise GeneratorConfigError(
            "the openai generator needs LESSON_LEDGER_OPENAI_API_KEY for api.openai.com"
        )
    if not settings.openai_model.strip():
        raise GeneratorConfigError("LESSON_LEDGER_OPENAI_MODEL is empty")
    return base_url, key


class OpenAIGenerator:
    """Generates lessons with an OpenAI-compatible endpoint; many attempts at once, in
    one event loop."""

    def __init__(
        self,
        settings: GeneratorSettings,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        base_url, key = checked_endpoint(settings)
        self.settings = settings
        self.limiter = limiter
        self._clock = clock or (lambda: datetime.now(UTC))
        self._response_format = _response_format(settings)
        self._client = openai.AsyncOpenAI(
            api_key=key or "none",  # a local endpoint may want none; the package wants one
            base_url=base_url,
            max_retries=settings.openai_max_tries - 1,
            timeout=httpx2.Timeout(
                settings.openai_timeout_seconds, connect=settings.openai_connect_timeout_seconds
            ),
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS
                ),
                event_hooks={"request": [self._before_call], "response": [self._after_call]},
            ),
        )

    @property
    def model(self) -> str:
        return self.settings.openai_model

    def estimated_tokens(self, request: GenerationRequest) -> int:
        """The prompt at about 4 characters a token, and the expected answer."""
        prompt = len(SYSTEM_PROMPT) + len(user_prompt(request))
        return prompt // 4 + self.settings.openai_estimated_completion_tokens

    async def generate(self, request: GenerationRequest) -> GeneratedLesson:
        started = time.perf_counter()
        attempt = _Attempt(request, self.estimated_tokens(request))
        token = _current.set(attempt)
        usage = TokenUsage()
        try:
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt(request)},
            ]
            tries = self.settings.openai_max_tries
            problem = ""
            while attempt.calls < tries:
                try:
                    answer = await self._call(attempt, messages, tries - attempt.calls - 1, usage)
                    usage += _usage(answer)
                    await self._settle(attempt, answer)
                    lesson = self._lesson(answer)
                except ValueError as error:
                    problem = f"invalid answer: {error}"
                    self._log_retry(attempt, problem, tries)
                    continue
                seconds = round(time.perf_counter() - started, 3)
                return lesson.model_copy(
                    update={
                        "metadata": lesson.metadata.model_copy(
                            update={"generation_seconds": seconds}
                        ),
                        "usage": usage,
                    }
                )
            raise GenerationError(f"openai: {problem} (after {_calls(attempt.calls)})", usage)
        finally:
            _current.reset(token)

    async def aclose(self) -> None:
        await self._client.close()

    # One call (and the package's retries of it).

    async def _call(
        self,
        attempt: _Attempt,
        messages: list[dict[str, str]],
        retries: int,
        usage: TokenUsage,
    ) -> ChatCompletion:
        body: dict[str, Any] = {
            "model": self.settings.openai_model,
            "messages": messages,
            "temperature": self.settings.openai_temperature,
        }
        if self._response_format is not None:
            body["response_format"] = self._response_format
        try:
            # The client's `post` (its documented way to any endpoint) rather than
            # `chat.completions.create`: the same retries, timeouts and errors, without
            # walking the body's types on every call (milliseconds of CPU each, for
            # hundreds of calls a second).
            return await self._client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body=body,
                options={
                    "headers": {ATTEMPT_HEADER: attempt.request.attempt_key},
                    "max_retries": retries,
                },
            )
        except openai.APIStatusError as error:
            status = error.status_code
            code = _error_code(error.body)
            if status in _RETRIED_BY_THE_PACKAGE or status >= 500:
                raise GenerationError(
                    f"openai: HTTP {status}{code} (after {_calls(attempt.calls)})", usage
                ) from None
            log.error("generation refused", extra={**_fields(attempt), "status": status})
            raise GenerationError(f"openai: HTTP {status}{code} (not retried)", usage) from None
        except openai.APITimeoutError:
            raise GenerationError(
                f"openai: timed out (after {_calls(attempt.calls)})", usage
            ) from None
        except openai.APIConnectionError as error:
            kind = type(error.__cause__ or error).__name__
            raise GenerationError(
                f"openai: connection failed ({kind}) (after {_calls(attempt.calls)})", usage
            ) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError, RecursionError):
            # RecursionError: a body nested deeper than any completion, in the package's parse
            raise ValueError("not a chat completion") from None

    async def _before_call(self, request: httpx2.Request) -> None:
        """Each HTTP call, retries included: count it, and wait for a permit."""
        attempt = _current.get()
        if attempt is None:
            return
        attempt.calls += 1
        if self.limiter is not None:
            attempt.permits.append(await self.limiter.acquire(attempt.estimate))

    async def _after_call(self, response: httpx2.Response) -> None:
        attempt = _current.get()
        if attempt is None or response.status_code < 400:
            return
        status = response.status_code
        if status in _RETRIED_BY_THE_PACKAGE or status >= 500:
            retry_after = _retry_after(response.headers)
            if status == 429 and retry_after is not None and self.limiter is not None:
                await self.limiter.pause(retry_after)
            if attempt.calls < self.settings.openai_max_tries:
                self._log_retry(attempt, f"HTTP {status}", self.settings.openai_max_tries)

    async def _settle(self, attempt: _Attempt, answer: ChatCompletion) -> None:
        """The last permit's tokens as the answer counts them (the estimate otherwise)."""
        if self.limiter is not None and attempt.permits and answer.usage is not None:
            await self.limiter.settle(attempt.permits[-1], answer.usage.total_tokens)

    def _log_retry(self, attempt: _Attempt, problem: str, tries: int) -> None:
        if attempt.calls < tries:
            log.warning("generation retry", extra={**_fields(attempt), "problem": problem})

    def _lesson(self, answer: ChatCompletion) -> GeneratedLesson:
        """The answer's lesson, validated; ValueError says what is wrong without quoting."""
        if not answer.choices:
            raise ValueError("not a chat completion")
        message = answer.choices[0].message
        if getattr(message, "refusal", None):
            raise ValueError("the model refused")
        content = message.content
        if not isinstance(content, str):
            raise ValueError("the message has no text content")
        try:
            data = json.loads(_without_fences(content))
        except ValueError as error:
            raise ValueError(f"the content is not JSON ({type(error).__name__})") from None
        except RecursionError:  # a model repeating itself: a malformed answer, retried
            raise ValueError("the content is nested too deeply to read") from None
        try:
            draft = LessonDraft.model_validate(data)
        except ValidationError as invalid:
            first = invalid.errors(include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "the answer"
            raise ValueError(
                f"the lesson JSON does not validate ({invalid.error_count()} error(s), "
                f"first at {where}: {first['msg']})"
            ) from None
        model = answer.model
        return GeneratedLesson(
            lesson=draft.lesson,
            worksheet=draft.worksheet,
            metadata=GenerationMetadata(
                generated_at=self._clock(),
                model=model if isinstance(model, str) and model else self.model,
                generation_seconds=0.0,
            ),
        )


def _response_format(settings: GeneratorSettings) -> dict[str, Any] | None:
    if settings.openai_structured_outputs:
        return {
            "type": "json_schema",
            "json_schema": {"name": "lesson", "strict": True, "schema": lesson_schema()},
        }
    if settings.openai_json_mode:
        return {"type": "json_object"}
    return None


def lesson_schema() -> dict[str, Any]:
    """The lesson's JSON schema as strict structured outputs want it: every property
    required, no other property allowed, no defaults."""
    schema = LessonDraft.model_json_schema()

    def strict(node: Any) -> None:
        if isinstance(node, list):
            for value in node:
                strict(value)
            return
        if not isinstance(node, dict):
            return
        node.pop("default", None)
        node.pop("title", None)
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for schema_of_one in value.values():
                    strict(schema_of_one)
            else:
                strict(value)
        if isinstance(node.get("properties"), dict):
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False

    strict(schema)
    return schema


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


def _usage(answer: ChatCompletion) -> TokenUsage:
    if answer.usage is None:
        return TokenUsage()
    return TokenUsage(
        prompt_tokens=answer.usage.prompt_tokens or 0,
        completion_tokens=answer.usage.completion_tokens or 0,
    )


def _calls(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _fields(attempt: _Attempt) -> dict[str, object]:
    return {
        "lesson_id": str(attempt.request.lesson_id),
        "attempt": attempt.request.attempt,
        "try": attempt.calls,
    }


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


def _retry_after(headers: httpx2.Headers) -> float | None:
    try:
        seconds = float(headers.get("retry-after", ""))
    except ValueError:
        return None  # an HTTP date, or nothing: the package's backoff decides
    return seconds if 0 < seconds <= 120 else None


def _error_code(body: object) -> str:
    """The provider's error type/code (not its message, which may echo the request)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    code = error.get("code") or error.get("type")
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return f" ({code})"
    return ""
