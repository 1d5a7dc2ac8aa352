"""The generators on their own: the template (deterministic, offline) and the openai
adapter against the fake server (retries, reasons, what a prompt may contain)."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import uuid
from datetime import UTC, datetime

import pytest

from adapters.generators import make_generator
from adapters.generators.openai_compatible import OpenAIGenerator, user_prompt
from adapters.generators.settings import GeneratorConfigError, GeneratorSettings
from adapters.generators.template import MODEL, TemplateGenerator
from projections.generation.port import (
    GeneratedLesson,
    GenerationError,
    GenerationInterrupted,
    GenerationRequest,
    Learner,
)
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI
from tests.support.generation import API_KEY, IEP_GOAL, STUDENT_IDS, openai_settings

FIXED = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)


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
    first = generator.generate(request())
    again = TemplateGenerator(clock=lambda: FIXED).generate(request(attempt=2))
    assert first.lesson == again.lesson and first.worksheet == again.worksheet
    unpinned = TemplateGenerator()  # only the metadata (when) may differ
    assert unpinned.generate(request()).model_dump(exclude={"metadata"}) == first.model_dump(
        exclude={"metadata"}
    )
    other = generator.generate(request(topic="Division"))
    assert other.lesson != first.lesson


def test_template_uses_duration_subject_grades_topic_and_role() -> None:
    lesson = TemplateGenerator().generate(request()).lesson
    assert lesson.duration == 45
    assert lesson.introduction.duration + lesson.activity.duration == 45
    assert "Math" in lesson.title and "Multiplication facts" in lesson.title
    assert "grades 3 and 5" in lesson.title
    assert "resource room" in lesson.overview and "skip counting" in lesson.overview
    kindergarten = TemplateGenerator().generate(
        request(learners=(Learner(grade=0), Learner(grade=1)), duration=5)
    )
    assert "grades K-1" in kindergarten.lesson.title
    assert kindergarten.lesson.duration == 5
    assert kindergarten.lesson.introduction.duration + kindergarten.lesson.activity.duration == 5


@pytest.mark.parametrize("subject_type", ["math", "ela", None])
@pytest.mark.parametrize("role", ["resource", "ot", "speech", "counseling", None])
def test_template_output_validates_and_keeps_student_data_out(
    subject_type: str | None, role: str | None
) -> None:
    generated = TemplateGenerator().generate(request(subject_type=subject_type, teacher_role=role))
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


def test_a_good_answer_is_validated_and_returned() -> None:
    with FakeOpenAI() as fake:
        generator = OpenAIGenerator(openai_settings(fake.base_url))
        generated = generator.generate(request())
        generator.close()
    assert generated.lesson.title == "Fractions on a number line"
    assert generated.metadata.model == "fake-model"
    [call] = fake.calls
    assert call.headers["Authorization"] == f"Bearer {API_KEY}"
    assert call.attempt_key == f"{request().lesson_id}/1"
    assert call.body["response_format"] == {"type": "json_object"}
    assert "grade 3" in call.prompt and IEP_GOAL in call.prompt  # may shape the prompt


@pytest.mark.parametrize(
    ("replies", "calls", "reason"),
    [
        ([fake_openai.error(429), fake_openai.error(500), fake_openai.ok()], 3, None),
        ([fake_openai.malformed(), fake_openai.ok()], 2, None),
        ([fake_openai.hang(0.8), fake_openai.ok()], 2, None),
        ([fake_openai.error(503)] * 3, 3, "HTTP 503 (scripted_error) (after 3 tries)"),
        ([fake_openai.error(429)] * 3, 3, "HTTP 429"),
        ([fake_openai.malformed()] * 3, 3, "the content is not JSON"),
        ([fake_openai.invalid_lesson()] * 3, 3, "does not validate"),
        ([fake_openai.not_a_completion()] * 3, 3, "not a chat completion"),
        ([fake_openai.hang(0.8)] * 3, 3, "timed out"),
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
        generator = OpenAIGenerator(openai_settings(fake.base_url, openai_timeout_seconds=0.3))
        try:
            if reason is None:
                assert generator.generate(attempt).lesson.duration == 30
            else:
                with pytest.raises(GenerationError) as failed:
                    generator.generate(attempt)
                assert reason in str(failed.value)
                assert "midd" not in str(failed.value)  # the answer is never quoted
        finally:
            generator.close()
        assert fake.calls_for(attempt.attempt_key) == calls


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    settings = openai_settings(
        "http://127.0.0.1:9/v1", openai_backoff_seconds=1.0, openai_max_backoff_seconds=8.0
    )
    generator = OpenAIGenerator(settings, rng=random.Random(7))
    delays = [[generator._backoff(n, None) for n in range(1, 6)] for _ in range(200)]
    for n, ceiling in enumerate([1, 2, 4, 8, 8]):
        column = [row[n] for row in delays]
        assert all(0 <= d <= ceiling for d in column)
        assert max(column) > ceiling * 0.8  # jitter spreads over the whole range
    assert generator._backoff(1, 5.0) >= 5.0
    assert generator._backoff(1, 60.0) <= 8.0  # capped
    generator.close()


def test_close_interrupts_a_generator_waiting_to_retry() -> None:
    with FakeOpenAI(default=fake_openai.error(503)) as fake:
        generator = OpenAIGenerator(
            openai_settings(
                fake.base_url,
                openai_backoff_seconds=30,
                openai_max_backoff_seconds=30,
                openai_max_tries=5,
            )
        )
        outcome: list[BaseException] = []

        def generate() -> None:
            try:
                generator.generate(request())
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=generate)
        thread.start()
        fake.wait_until(lambda f: len(f.calls) >= 1, 5, "the first call")
        generator.close()
        thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome[0], GenerationInterrupted)


def test_no_student_id_in_the_prompt_and_nothing_sensitive_in_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    state_students = [
        {
            "id": STUDENT_IDS[0],
            "grade": 2,
            "reading_level": "H",
            "iep_goals": [IEP_GOAL],
            "accommodations": None,
        },
    ]
    from domain.lesson import LessonState

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
        fake.script(attempt.attempt_key, fake_openai.error(500), fake_openai.ok())
        generator = OpenAIGenerator(openai_settings(fake.base_url))
        generator.generate(attempt)
        generator.close()
    assert len(fake.calls) == 2
    assert all(STUDENT_IDS[0] not in call.raw for call in fake.calls)
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "generation retry" in logged
    for secret in (STUDENT_IDS[0], IEP_GOAL, API_KEY, "Fractions on a number line"):
        assert secret not in logged


# Pre-K and TK (grades -2 and -1).

PRESCHOOL = (Learner(grade=-2), Learner(grade=-1))


@pytest.mark.parametrize("subject_type", ["ela", "math"])
def test_template_writes_for_pre_k_and_tk_without_reading_or_writing(subject_type: str) -> None:
    generated = TemplateGenerator().generate(
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
        .generate(request(learners=tuple(Learner(grade=g) for g in grades)))
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
