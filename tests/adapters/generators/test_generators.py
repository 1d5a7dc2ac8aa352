"""The generators on their own: the template (deterministic, offline) and the openai
adapter (the official package's async client) against the fake server: retries,
Retry-After, reasons, tokens used, structured outputs, hundreds of calls at once, and
what a prompt may contain."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from adapters.generators import make_generator
from adapters.generators.limits import Limits, MemoryRateLimiter
from adapters.generators.openai_compatible import OpenAIGenerator, lesson_schema, user_prompt
from adapters.generators.settings import GeneratorConfigError, GeneratorSettings
from adapters.generators.template import MODEL, TemplateGenerator
from projections.generation.port import (
    GeneratedLesson,
    GenerationError,
    GenerationRequest,
    Learner,
    LessonDraft,
)
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI
from tests.support.generation import API_KEY, IEP_GOAL, STUDENT_IDS, openai_settings

FIXED = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)
T = TypeVar("T")


def run(
    settings: GeneratorSettings, use: Callable[[OpenAIGenerator], Awaitable[T]], **kw: Any
) -> T:
    """Run `use(generator)` in an event loop of its own, then close the generator."""

    async def main() -> T:
        generator = OpenAIGenerator(settings, **kw)
        try:
            return await use(generator)
        finally:
            await generator.aclose()

    return asyncio.run(main())


def request(**changes: object) -> GenerationRequest:
    values: dict[str, object] = {
        "lesson_id": uuid.UUID("3b7c0c1e-52a5-5a8e-9d7a-6b1f0c8e2a11"),
        "attempt": 1,
        "subject": "Math",
        "subject_type": "math",
        "teacher_role": "resource",
        "topic": "Multiplication facts",
        "duration": 45,
        "focus_skills": ("skip counting",),
        "learners": (
            Learner(grade=3, reading_level="J", iep_goals=(IEP_GOAL,)),
            Learner(grade=5, accommodations=("extended time",)),
        ),
    }
    values.update(changes)
    return GenerationRequest(**values)  # type: ignore[arg-type]


# The template generator.


def test_template_is_deterministic_for_the_same_details() -> None:
    generator = TemplateGenerator(clock=lambda: FIXED)
    first = asyncio.run(generator.generate(request()))
    again = TemplateGenerator(clock=lambda: FIXED).build(request(attempt=2))
    assert first.lesson == again.lesson and first.worksheet == again.worksheet
    assert first.usage is None  # no model, no tokens
    unpinned = TemplateGenerator()  # only the metadata (when) may differ
    assert unpinned.build(request()).model_dump(exclude={"metadata"}) == first.model_dump(
        exclude={"metadata"}
    )
    other = generator.build(request(topic="Division"))
    assert other.lesson != first.lesson


def test_template_uses_duration_subject_grades_topic_and_role() -> None:
    lesson = TemplateGenerator().build(request()).lesson
    assert lesson.duration == 45
    assert lesson.introduction.duration + lesson.activity.duration == 45
    assert "Math" in lesson.title and "Multiplication facts" in lesson.title
    assert "grades 3 and 5" in lesson.title
    assert "resource room" in lesson.overview and "skip counting" in lesson.overview
    kindergarten = TemplateGenerator().build(
        request(learners=(Learner(grade=0), Learner(grade=1)), duration=5)
    )
    assert "grades K-1" in kindergarten.lesson.title
    assert kindergarten.lesson.duration == 5
    assert kindergarten.lesson.introduction.duration + kindergarten.lesson.activity.duration == 5


def test_template_without_a_topic_names_the_subject_once() -> None:
    lesson = TemplateGenerator().build(request(topic=None)).lesson
    assert lesson.title == "A 45-minute Math lesson (grades 3 and 5)"
    assert lesson.overview.startswith("A 45-minute resource room lesson in Math for grades 3 and 5")
    assert all("Math" in objective for objective in lesson.objectives)


@pytest.mark.parametrize("subject_type", ["math", "ela", None])
@pytest.mark.parametrize("role", ["resource", "ot", "speech", "counseling", None])
def test_template_output_validates_and_keeps_student_data_out(
    subject_type: str | None, role: str | None
) -> None:
    generated = TemplateGenerator().build(request(subject_type=subject_type, teacher_role=role))
    content = generated.content()
    assert GeneratedLesson.model_validate(json.loads(json.dumps(content))) == generated
    assert set(content) == {"lesson", "worksheet", "metadata"}
    assert set(content["metadata"]) == {"generated_at", "model", "generation_seconds"}
    assert content["metadata"]["model"] == MODEL
    for section in ("introduction", "activity"):
        assert set(content["lesson"][section]) >= {
            "description",
            "duration",
            "instructions",
            "materials",
        }
    text = json.dumps(content)
    assert IEP_GOAL not in text and "extended time" not in text


def test_the_settings_choose_the_generator() -> None:
    assert isinstance(make_generator(GeneratorSettings(_env_file=None)), TemplateGenerator)  # type: ignore[call-arg]
    with pytest.raises(GeneratorConfigError, match="API_KEY"):
        make_generator(GeneratorSettings(_env_file=None, generator="openai"))  # type: ignore[call-arg]
    with pytest.raises(GeneratorConfigError, match="http"):
        make_generator(
            GeneratorSettings(_env_file=None, generator="openai", openai_base_url="localhost:1")  # type: ignore[call-arg]
        )


# The openai adapter against the fake server.


def test_a_good_answer_is_validated_and_returned_with_its_tokens() -> None:
    with FakeOpenAI() as fake:
        generated = run(openai_settings(fake.base_url), lambda g: g.generate(request()))
    assert generated.lesson.title == "Fractions on a number line"
    assert generated.metadata.model == "fake-model"
    [call] = fake.calls
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.attempt_key == f"{request().lesson_id}/1"
    assert "grade 3" in call.prompt and IEP_GOAL in call.prompt  # may shape the prompt
    # The tokens the answer reported, not counted into the lesson's content.
    assert generated.usage is not None and generated.usage.total_tokens == call.tokens > 0
    assert "usage" not in generated.content()


def test_structured_outputs_send_the_lessons_schema_strict_unless_turned_off() -> None:
    with FakeOpenAI() as fake:
        run(openai_settings(fake.base_url), lambda g: g.generate(request()))
        run(
            openai_settings(fake.base_url, openai_structured_outputs=False),
            lambda g: g.generate(request()),
        )
        run(
            openai_settings(fake.base_url, openai_structured_outputs=False, openai_json_mode=False),
            lambda g: g.generate(request()),
        )
    structured, json_mode, plain = (call.body.get("response_format") for call in fake.calls)
    assert structured is not None
    assert structured["type"] == "json_schema"
    assert structured["json_schema"]["strict"] is True
    schema = structured["json_schema"]["schema"]
    assert schema == lesson_schema()
    assert schema["required"] == ["lesson", "worksheet"]
    assert schema["additionalProperties"] is False
    for definition in schema["$defs"].values():  # strict: every property required
        assert definition["required"] == list(definition["properties"])
        assert definition["additionalProperties"] is False
    # The schema describes what the ledger accepts: the fake's lesson validates.
    LessonDraft.model_validate(fake_openai.VALID_LESSON)
    assert json_mode == {"type": "json_object"}
    assert plain is None


@pytest.mark.parametrize(
    ("replies", "calls", "reason"),
    [
        ([fake_openai.error(429), fake_openai.error(500), fake_openai.ok()], 3, None),
        ([fake_openai.malformed(), fake_openai.ok()], 2, None),
        ([fake_openai.hang(0.8), fake_openai.ok()], 2, None),
        ([fake_openai.error(503), fake_openai.malformed(), fake_openai.ok()], 3, None),
        ([fake_openai.error(503)] * 3, 3, "HTTP 503 (scripted_error) (after 3 tries)"),
        ([fake_openai.error(429)] * 3, 3, "HTTP 429"),
        ([fake_openai.malformed()] * 3, 3, "the content is not JSON"),
        ([fake_openai.stuck_in_a_loop(), fake_openai.ok()], 2, None),
        ([fake_openai.stuck_in_a_loop()] * 3, 3, "the content is nested too deeply to read"),
        ([fake_openai.invalid_lesson()] * 3, 3, "does not validate"),
        ([fake_openai.not_a_completion()] * 3, 3, "not a chat completion"),
        ([fake_openai.nested_too_deeply()] * 3, 3, "not a chat completion"),
        ([fake_openai.hang(0.8)] * 3, 3, "timed out"),
        ([fake_openai.malformed()] * 2 + [fake_openai.error(503)], 3, "HTTP 503"),
        ([fake_openai.error(400)], 1, "HTTP 400 (scripted_error) (not retried)"),
        ([fake_openai.error(401)], 1, "HTTP 401"),
    ],
)
def test_retries_and_reasons(
    replies: list[fake_openai.Reply], calls: int, reason: str | None
) -> None:
    with FakeOpenAI() as fake:
        attempt = request()
        fake.script(attempt.attempt_key, *replies)
        settings = openai_settings(fake.base_url, openai_timeout_seconds=0.3)
        if reason is None:
            generated = run(settings, lambda g: g.generate(attempt))
            assert generated.lesson.duration == 30
        else:
            with pytest.raises(GenerationError) as failed:
                run(settings, lambda g: g.generate(attempt))
            assert reason in str(failed.value)
            assert "midd" not in str(failed.value)  # the answer is never quoted
        # Never more calls than tries, whoever retried them (the package or us).
        assert fake.calls_for(attempt.attempt_key) == calls


def test_a_429_with_retry_after_is_honoured_and_pauses_the_limiter() -> None:
    """The model says 429, Retry-After 1.5: the retry comes no sooner; with limits set, the
    other attempts sharing the limiter hold off for as long."""
    first, second = request(), request(lesson_id=uuid.uuid4())
    limiter = MemoryRateLimiter(Limits(requests=1000, tokens=None, window_seconds=60))
    with FakeOpenAI() as fake:
        fake.script(first.attempt_key, fake_openai.error(429, retry_after=1.5), fake_openai.ok())

        async def both(generator: OpenAIGenerator) -> None:
            await generator.generate(first)
            await generator.generate(second)

        run(openai_settings(fake.base_url), both, limiter=limiter)
        refused, retried = fake.arrivals(first.attempt_key)
        [other] = fake.arrivals(second.attempt_key)
    assert retried - refused >= 1.5
    assert retried - refused < 1.5 + 1.0  # the package's own backoff did not add to it
    assert other >= refused + 1.5


def test_the_limiter_holds_calls_to_the_requests_per_window() -> None:
    limiter = MemoryRateLimiter(Limits(requests=3, tokens=None, window_seconds=1.0))
    attempts = [request(lesson_id=uuid.uuid4()) for _ in range(7)]
    with FakeOpenAI() as fake:

        async def all_at_once(generator: OpenAIGenerator) -> list[GeneratedLesson]:
            return await asyncio.gather(*(generator.generate(a) for a in attempts))

        started = time.monotonic()
        run(openai_settings(fake.base_url), all_at_once, limiter=limiter)
        elapsed = time.monotonic() - started
    assert len(fake.calls) == 7
    assert fake.most_calls_in_window(1.0) <= 3
    assert elapsed >= 2.0  # 7 calls at 3 a window: the third group waits two windows


def test_hundreds_of_calls_in_flight_at_once_in_one_event_loop() -> None:
    attempts = [request(lesson_id=uuid.uuid4()) for _ in range(300)]
    with FakeOpenAI(default=fake_openai.ok(delay=1.0)) as fake:

        async def all_at_once(generator: OpenAIGenerator) -> list[GeneratedLesson]:
            return await asyncio.gather(*(generator.generate(a) for a in attempts))

        started = time.monotonic()
        lessons = run(openai_settings(fake.base_url), all_at_once)
        elapsed = time.monotonic() - started
    assert len(lessons) == 300 and fake.peak_in_flight == 300
    assert elapsed < 10  # one at a time would take 300 s


def test_no_student_id_in_the_prompt_and_nothing_sensitive_in_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the openai package's debug lines included
    state_students = [
        {
            "id": STUDENT_IDS[0],
            "grade": 2,
            "reading_level": "H",
            "iep_goals": [IEP_GOAL],
            "accommodations": None,
        },
    ]
    from domain import LessonState

    state = LessonState(
        lesson_id=uuid.uuid4(),
        provider_id="p",
        school_id="s",
        lesson_date=FIXED.date(),
        time_slot="08:00-08:30",
        kind="scheduled",
        status="requested",
        attempt=1,
        request_id="r",
        requested_by="a",
        requested_at=FIXED,
        correlation_id=None,
        details={"subject": "Reading", "subject_type": "ela", "duration": 20},
        students=state_students,
        content=None,
        model=None,
        generated_at=None,
        failure_reason=None,
        cancel_reason=None,
        version=2,
        updated_at=FIXED,
    )
    attempt = GenerationRequest.from_state(state)
    assert STUDENT_IDS[0] not in attempt.model_dump_json()
    assert "Student 1: grade 2, reading level H" in user_prompt(attempt)
    with FakeOpenAI() as fake:
        fake.script(attempt.attempt_key, fake_openai.error(500), fake_openai.malformed())
        run(openai_settings(fake.base_url), lambda g: g.generate(attempt))
    assert len(fake.calls) == 3
    assert all(STUDENT_IDS[0] not in call.raw for call in fake.calls)
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "generation retry" in logged
    for secret in (STUDENT_IDS[0], IEP_GOAL, API_KEY, "Fractions on a number line"):
        assert secret not in logged


# Pre-K and TK (grades -2 and -1).

PRESCHOOL = (Learner(grade=-2), Learner(grade=-1))


@pytest.mark.parametrize("subject_type", ["ela", "math"])
def test_template_writes_for_pre_k_and_tk_without_reading_or_writing(subject_type: str) -> None:
    generated = TemplateGenerator().build(
        request(learners=PRESCHOOL, subject_type=subject_type, teacher_role="speech")
    )
    text = json.dumps(generated.content()).lower()

    assert "(pre-k to tk)" in generated.lesson.title.lower()
    for writing in ("write", "sentence", "solve for", " x ", "read and respond", "passage"):
        assert writing not in text, writing
    prompts = [item.prompt.lower() for item in generated.worksheet.items]
    hands_on = ("point", "say", "draw", "clap", "sort", "show", "count", "tower", "find", "tell")
    assert all(any(word in prompt for word in hands_on) for prompt in prompts), prompts
    if subject_type == "math":  # small numbers, objects in hand
        numbers = [int(n) for p in prompts for n in re.findall(r"\d+", p)]
        assert numbers and max(numbers) <= 5


def test_template_names_the_early_grades() -> None:
    titles = {
        grades: TemplateGenerator()
        .build(request(learners=tuple(Learner(grade=g) for g in grades)))
        .lesson.title
        for grades in [(-2,), (-1,), (0,), (-1, 0, 1), (-2, 3)]
    }
    assert [title.rsplit("(", 1)[1] for title in titles.values()] == [
        "pre-K)",
        "TK)",
        "grade K)",
        "TK to grade 1)",
        "grades pre-K and 3)",
    ]


def test_the_prompt_names_pre_k_and_tk_and_asks_for_tasks_they_can_do() -> None:
    prompt = user_prompt(request(learners=(*PRESCHOOL, Learner(grade=0))))
    assert "Grade levels: pre-K to grade K" in prompt
    assert "Student 1: pre-K (pre-kindergarten)" in prompt
    assert "Student 2: TK (transitional kindergarten)" in prompt
    assert "Student 3: grade K" in prompt
    assert "do not read or write yet" in prompt
    assert "do not read or write" not in user_prompt(request())
