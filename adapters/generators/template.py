"""The `template` generator: a structured lesson built from the request's details, offline.

Deterministic: the same details give the same lesson and worksheet (worksheet numbers and
the choice of wording come from a hash of the details, never from a clock or a global
random state); only `metadata` says when it was made. It uses the subject, subject type,
topic, duration, focus skills, teacher role and the students' grade levels (a group
with pre-K or TK students gets picture, spoken and hands-on tasks, no writing), and
nothing else about the students: IEP goals, accommodations and reading levels stay in the
students' own part of the events, so that erasing a student does not have to touch
lesson content.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from projections.generation.port import (
    GeneratedLesson,
    GenerationMetadata,
    GenerationRequest,
    LessonPlan,
    Section,
    Worksheet,
    WorksheetItem,
    grade_label,
)

MODEL = "template-v1"
WORKSHEET_ITEMS = 6

_ROLE_SETTING = {
    "resource": ("resource room", "in a small group, with modelling and guided practice"),
    "ot": ("occupational therapy", "with hands-on, fine-motor friendly materials"),
    "speech": ("speech-language", "with turn-taking and plenty of spoken practice"),
    "counseling": ("counseling", "in a calm, discussion-based circle"),
}
_DEFAULT_SETTING = ("classroom", "with modelling, guided practice and independent practice")


class TemplateGenerator:
    """Builds the lesson from templates; `clock` is injectable so tests can pin it."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def model(self) -> str:
        return MODEL

    def estimated_tokens(self, request: GenerationRequest) -> int:
        return 0  # no model, no tokens

    async def generate(self, request: GenerationRequest) -> GeneratedLesson:
        return self.build(request)

    def build(self, request: GenerationRequest) -> GeneratedLesson:
        """The lesson, synchronously (it waits on nothing)."""
        started = time.perf_counter()
        rng = random.Random(_seed(request))
        draft_lesson = _lesson(request)
        worksheet = _worksheet(request, rng)
        return GeneratedLesson(
            lesson=draft_lesson,
            worksheet=worksheet,
            metadata=GenerationMetadata(
                generated_at=self._clock(),
                model=MODEL,
                generation_seconds=round(time.perf_counter() - started, 6),
            ),
        )

    async def aclose(self) -> None:
        """Nothing to free."""


def _seed(request: GenerationRequest) -> int:
    """A seed from the details only: not the lesson id or attempt, so a regeneration of
    the same details is the same lesson (the template has no other way to vary)."""
    details = request.model_dump(mode="json", exclude={"lesson_id", "attempt"})
    digest = hashlib.sha256(json.dumps(details, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _lesson(request: GenerationRequest) -> LessonPlan:
    grades = grade_label(request.grades)
    topic = request.topic or request.subject
    place, manner = _ROLE_SETTING.get(request.teacher_role or "", _DEFAULT_SETTING)
    intro_minutes = max(1, request.duration // 5)
    activity_minutes = request.duration - intro_minutes
    skills = list(request.focus_skills)
    early = request.early_years  # pre-K or TK: nothing to read or write
    objectives = [
        f"Students show what they know about {topic} by pointing, saying or doing."
        if early
        else f"Students explain the key idea of {topic} in their own words."
    ]
    objectives += [f"Students practise {skill} while working on {topic}." for skill in skills]
    if request.subject_type == "math":
        objectives.append(
            f"Students count and compare small groups of objects about {topic}."
            if early
            else f"Students solve {grades} problems about {topic} and check them."
        )
    elif early:
        objectives.append(f"Students listen to a picture book about {topic} and talk about it.")
    else:
        objectives.append(f"Students read and respond to a short text about {topic}.")
    board = "picture cards" if early else "whiteboard and markers"
    sheet = f"{'picture' if early else 'printed'} worksheet (one per student)"
    materials = [board, sheet]
    if request.subject_type == "math":
        materials.append("counters or base-ten blocks")
    elif early:
        materials.append("a picture book")
    elif request.subject_type == "ela":
        materials.append("short leveled passage")
    # Without a topic the subject stands in for it, and is not named twice.
    lesson = f"{request.duration}-minute {request.subject} lesson ({grades})"
    title = f"{topic}: a {lesson}" if request.topic else f"A {lesson}"
    on_topic = f" on {topic}" if request.topic else ""
    return LessonPlan(
        title=title,
        duration=request.duration,
        objectives=objectives,
        materials=materials,
        overview=(
            f"A {request.duration}-minute {place} lesson in {request.subject}{on_topic} "
            f"for {grades}, taught {manner}."
            + (f" Focus skills: {', '.join(skills)}." if skills else "")
        ),
        introduction=Section(
            description=f"Warm-up: connect {topic} to what students already know.",
            duration=intro_minutes,
            instructions=_warm_up(request, topic),
            materials=[board],
        ),
        activity=Section(
            description=f"Guided, then independent practice on {topic}.",
            duration=activity_minutes,
            instructions=_practice(request),
            materials=[sheet],
        ),
    )


def _warm_up(request: GenerationRequest, topic: str) -> list[str]:
    if request.early_years:
        return [
            f"Show a picture of {topic} and ask what students notice.",
            "Model one example aloud with objects or pictures.",
            "Say today's goal in a few simple words.",
        ]
    return [
        f"Ask students what they already know about {topic}.",
        "Model one example aloud, naming each step.",
        "State today's goal in one sentence.",
    ]


def _practice(request: GenerationRequest) -> list[str]:
    if request.early_years:
        return [
            "Do the first two tasks together, showing each step with objects or pictures.",
            "Each student does the other tasks with support: pointing, saying or building.",
            "Celebrate each answer and ask each student to show one to the group.",
        ]
    return [
        "Work the first two worksheet items together.",
        "Students complete the remaining items; check in with each student.",
        "Review answers together and ask each student to explain one.",
    ]


def _worksheet(request: GenerationRequest, rng: random.Random) -> Worksheet:
    topic = request.topic or request.subject
    if request.early_years:
        return _early_years_worksheet(request, topic, rng)
    top_grade = max(request.grades, default=2)
    if request.subject_type == "math":
        items = [_math_item(top_grade, rng) for _ in range(WORKSHEET_ITEMS)]
        instructions = "Solve each problem. Show your work."
    else:
        prompts = [
            f"Write one sentence that tells what {topic} is about.",
            f"List two words that go with {topic}.",
            f"Draw or describe a picture that shows {topic}.",
            f"Ask one question about {topic}.",
            f"Tell a partner one new thing you learned about {topic}.",
            f"Write a sentence using a new word from today's {request.subject} lesson.",
            f"Circle the main idea in today's passage about {topic}.",
            f"Explain how {topic} connects to something in your life.",
        ]
        rng.shuffle(prompts)
        items = [WorksheetItem(prompt=p) for p in prompts[:WORKSHEET_ITEMS]]
        instructions = "Answer each question in a complete sentence."
    return Worksheet(title=f"{topic} practice", instructions=instructions, items=items)


def _math_item(grade: int, rng: random.Random) -> WorksheetItem:
    """A problem sized for the grade: sums and differences early, products later."""
    if grade <= 2:
        a, b = rng.randint(1, 10 + 5 * grade), rng.randint(1, 10)
        if rng.random() < 0.5 or a < b:
            return WorksheetItem(prompt=f"{a} + {b} = ?", answer=str(a + b))
        return WorksheetItem(prompt=f"{a} - {b} = ?", answer=str(a - b))
    if grade <= 5:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return WorksheetItem(prompt=f"{a} x {b} = ?", answer=str(a * b))
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    c = rng.randint(1, 30)
    return WorksheetItem(prompt=f"Solve for x: {a}x + {c} = {a * b + c}", answer=f"x = {b}")


def _early_years_worksheet(request: GenerationRequest, topic: str, rng: random.Random) -> Worksheet:
    """Pre-K and TK: nothing to read or write. Counting up to 5 (pre-K) or 10 (TK) with
    objects in hand, pictures to point at, words to say."""
    if request.subject_type == "math":
        most = 5 if min(request.grades) == -2 else 10
        items = [_counting_item(most, rng) for _ in range(WORKSHEET_ITEMS)]
        instructions = "Use counters, blocks or fingers. Say or show each answer; no writing."
    else:
        prompts = [
            f"Point to the picture that shows {topic}.",
            f"Say one word about {topic}.",
            f"Draw a picture of {topic}.",
            f"Clap the parts of a word about {topic}.",
            f"Sort the picture cards about {topic} into two groups.",
            f"Find something in the room that goes with {topic} and show it.",
            f"Tell a grown-up one thing about {topic}.",
            f"Say a word that starts with the same sound as {topic}.",
        ]
        rng.shuffle(prompts)
        items = [WorksheetItem(prompt=p) for p in prompts[:WORKSHEET_ITEMS]]
        instructions = "Do each task with a grown-up: point, say, draw or show. No writing."
    return Worksheet(title=f"{topic}: picture practice", instructions=instructions, items=items)


def _counting_item(most: int, rng: random.Random) -> WorksheetItem:
    """Count, make or compare small groups of objects (up to `most`)."""
    a, b = rng.randint(2, most), rng.randint(2, most)
    kind = rng.randrange(3)
    if kind == 0:
        return WorksheetItem(prompt=f"Count {a} counters into a row. How many?", answer=str(a))
    if kind == 1:
        return WorksheetItem(prompt=f"Show {a} fingers.", answer=str(a))
    if a == b:
        return WorksheetItem(
            prompt=f"Make a tower of {a} blocks and a tower of {b}. Which is taller?",
            answer="the same",
        )
    more = max(a, b)
    return WorksheetItem(
        prompt=f"Make a tower of {a} blocks and a tower of {b}. Which has more?",
        answer=f"the tower of {more}",
    )
