"""The generator port: what the generation worker asks a generator for, and what it gets
back. Owned here, implemented in adapters/generators/ (template, OpenAI-compatible).

A generator is asynchronous (hundreds of attempts wait on the model at once in one
event loop): it turns a `GenerationRequest` into a `GeneratedLesson` (validated JSON and
the tokens it used) or raises `GenerationError` with a reason that the worker records as
the attempt's failure. Cancelling `generate` leaves the attempt unfinished.
Students reach a generator without their ids (`Learner` has no id field): a generator
cannot leak what it never receives. Grades, reading levels, IEP goals and accommodations
may shape a prompt, but are never logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.state import LessonState

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Minutes = Annotated[int, Field(ge=1, le=120)]


class TokenUsage(BaseModel):
    """Tokens one attempt used, over all its calls (what the model's account is billed)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    def recorded(self) -> dict[str, int]:
        """As the LessonGenerated event records it."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class GenerationError(Exception):
    """Generating the attempt failed for good; `str(error)` is the reason recorded with
    GenerationFailed. It must name what went wrong without quoting lesson content or
    student data. `usage`: the tokens spent on the way (malformed answers cost too)."""

    def __init__(self, reason: str, usage: TokenUsage | None = None) -> None:
        super().__init__(reason)
        self.usage = usage


class GenerationInterrupted(Exception):
    """The generator was closed while it waited (e.g. between retries): the attempt is
    not finished and will be generated again by the next worker to run."""


# What a generator receives.


class Learner(BaseModel):
    """One student as a generator sees them: no id, no name."""

    model_config = ConfigDict(frozen=True)

    grade: int
    reading_level: str | None = None
    iep_goals: tuple[str, ...] = ()
    accommodations: tuple[str, ...] = ()


class GenerationRequest(BaseModel):
    """One attempt of one lesson, with the request's details.

    `lesson_id` and `attempt` identify the attempt (e.g. for an upstream request header);
    they are not student data.
    """

    model_config = ConfigDict(frozen=True)

    lesson_id: UUID
    attempt: int
    subject: str
    subject_type: str | None = None
    teacher_role: str | None = None
    topic: str | None = None
    duration: int = 30
    focus_skills: tuple[str, ...] = ()
    learners: tuple[Learner, ...] = ()

    @classmethod
    def from_state(cls, state: LessonState) -> GenerationRequest:
        """The request of the slot's current attempt (its students' parts opened): student
        ids are dropped here, and so is an erased student (None), whole."""
        details: dict[str, Any] = state.details or {}
        students = [student for student in state.students or [] if student is not None]
        return cls(
            lesson_id=state.lesson_id,
            attempt=state.attempt,
            subject=details.get("subject") or "Lesson",
            subject_type=details.get("subject_type"),
            teacher_role=details.get("teacher_role"),
            topic=details.get("topic"),
            duration=details.get("duration") or 30,
            focus_skills=tuple(details.get("focus_skills") or ()),
            learners=tuple(
                Learner(
                    grade=student["grade"],
                    reading_level=student.get("reading_level"),
                    iep_goals=tuple(student.get("iep_goals") or ()),
                    accommodations=tuple(student.get("accommodations") or ()),
                )
                for student in students
            ),
        )

    @property
    def grades(self) -> list[int]:
        """The distinct grade levels, ascending (-2 pre-K, -1 TK, 0 kindergarten)."""
        return sorted({learner.grade for learner in self.learners})

    @property
    def early_years(self) -> bool:
        """Whether any student is in pre-K or TK: the lesson is written for them."""
        return any(grade in EARLY_YEARS for grade in self.grades)

    @property
    def attempt_key(self) -> str:
        """`<lesson_id>/<attempt>`: names the attempt to an upstream service."""
        return f"{self.lesson_id}/{self.attempt}"


GRADE_NAMES = {-2: "pre-K", -1: "TK", 0: "K"}
"""Grades below 1 by name: pre-kindergarten, transitional kindergarten, kindergarten."""
EARLY_YEARS = {-2: "pre-kindergarten", -1: "transitional kindergarten"}
"""The grades before kindergarten (ages 3 to 5), whose students do not read or write yet."""


def grade_name(grade: int) -> str:
    """ "pre-K", "TK", "K", "3"."""
    return GRADE_NAMES.get(grade, str(grade))


def grade_label(grades: list[int]) -> str:
    """ "pre-K", "TK", "grade K", "grade 3", "grades 2-4", "pre-K to grade K",
    "grades K, 2 and 5"."""
    names = [grade_name(grade) for grade in grades]
    if not names:
        return "mixed grades"
    if len(names) == 1:
        return _one_grade(grades[0])
    if grades == list(range(grades[0], grades[-1] + 1)):
        if grades[0] < 0:  # "pre-K-K" would read as one name
            return f"{_one_grade(grades[0])} to {_one_grade(grades[-1])}"
        return f"grades {names[0]}-{names[-1]}"
    return f"grades {', '.join(names[:-1])} and {names[-1]}"


def _one_grade(grade: int) -> str:
    return grade_name(grade) if grade in EARLY_YEARS else f"grade {grade_name(grade)}"


# What a generator returns: the lesson JSON recorded with LessonGenerated.


class _Model(BaseModel):
    # Extra keys are dropped, not refused: a language model that adds a field has still
    # written a usable lesson.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Section(_Model):
    """A part of the lesson: what happens, for how long, how, with what."""

    description: Text
    duration: Minutes
    instructions: list[Item] = Field(min_length=1, max_length=30)
    materials: list[Item] = Field(default_factory=list, max_length=30)


class LessonPlan(_Model):
    """The lesson itself."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    duration: Annotated[int, Field(ge=5, le=120)]
    objectives: list[Item] = Field(min_length=1, max_length=20)
    materials: list[Item] = Field(default_factory=list, max_length=30)
    overview: Text
    introduction: Section
    activity: Section


class WorksheetItem(_Model):
    """One task of the worksheet, with its answer where there is one."""

    prompt: Item
    answer: Item | None = None


class Worksheet(_Model):
    """The practice sheet that goes with the lesson."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    instructions: Text
    items: list[WorksheetItem] = Field(min_length=1, max_length=50)


class LessonDraft(_Model):
    """What a generator writes: the lesson and its worksheet."""

    lesson: LessonPlan
    worksheet: Worksheet


class GenerationMetadata(_Model):
    """How the lesson came about."""

    generated_at: datetime
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    generation_seconds: float = Field(ge=0)


class GeneratedLesson(LessonDraft):
    """The lesson JSON the ledger records: `lesson`, `worksheet`, `metadata`; and the
    tokens it cost (`usage`, recorded beside the content, not in it)."""

    metadata: GenerationMetadata
    usage: TokenUsage | None = Field(default=None, exclude=True)

    def content(self) -> dict[str, Any]:
        """As recorded in the LessonGenerated event (JSON types only)."""
        return self.model_dump(mode="json")


# The port.


class LessonGenerator(Protocol):
    """Writes the lesson of one attempt. Many `generate` calls run at once, in one event
    loop (the worker's); `aclose` runs in that loop too."""

    @property
    def model(self) -> str:
        """The model name recorded with each lesson (e.g. "template-v1", "gpt-4o-mini")."""
        ...

    def estimated_tokens(self, request: GenerationRequest) -> int:
        """What an attempt is expected to cost, before it is made (for the daily cap)."""
        ...

    async def generate(self, request: GenerationRequest) -> GeneratedLesson:
        """The lesson, or GenerationError (recorded as the failure's reason), or
        GenerationInterrupted (the attempt stays unfinished); cancellable."""
        ...

    async def aclose(self) -> None:
        """Free connections; idempotent."""
        ...
