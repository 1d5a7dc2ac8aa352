"""`lesson-ledger regenerate | cancel`: an operator's changes to a lesson, as the API's
`/regeneration` and `/cancellation` make them, by lesson id or by the lesson's key.

Exit codes as every lesson command: 0 done (replayed included), 1 rejected by the domain
(the lesson is in no state for it: the answer names the holder) or no such lesson, 2 bad
input, 3 the database cannot be reached.
"""

from __future__ import annotations

from typing import Annotated, Protocol
from uuid import UUID

import typer

from adapters.cli.lessons import (
    Actor,
    LessonDate,
    LessonIdArgument,
    Provider,
    School,
    Slot,
    lesson_id_from,
    lesson_not_found,
    print_result,
)
from adapters.cli.options import AsJson, DatabaseUrl, opened_ledger
from domain import CommandResult, LessonLedger, LessonNotFound

change_commands = typer.Typer()

RequestId = Annotated[
    str, typer.Option("--request-id", help="idempotency key: the same id again is replayed")
]
Reason = Annotated[str | None, typer.Option("--reason", help="why, as the event records it")]


class Change(Protocol):
    """`LessonLedger.regenerate` or `LessonLedger.cancel`: one signature."""

    def __call__(
        self,
        ledger: LessonLedger,
        /,
        *,
        lesson_id: UUID,
        request_id: str,
        actor: str,
        reason: str | None,
        source: str,
    ) -> CommandResult: ...


@change_commands.command()
def regenerate(
    request_id: RequestId,
    actor: Actor,
    lesson_id: LessonIdArgument = None,
    provider: Provider = None,
    school: School = None,
    date: LessonDate = None,
    slot: Slot = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Start a new attempt for a generated or failed lesson: the worker generates it again.

    Any other state is a conflict naming the holder (exit 1), recorded in its history.

    Example: lesson-ledger regenerate 689694ac-5241-543e-b8eb-6b59aeff777a
    --request-id regen-1 --reason "the model timed out"
    """
    lesson = (lesson_id, provider, school, date, slot)
    _change(LessonLedger.regenerate, lesson, request_id, actor, reason, database_url, as_json)


@change_commands.command()
def cancel(
    request_id: RequestId,
    actor: Actor,
    lesson_id: LessonIdArgument = None,
    provider: Provider = None,
    school: School = None,
    date: LessonDate = None,
    slot: Slot = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a requested, generated or failed lesson: its slot is free to be requested again.

    A lesson already cancelled is a conflict (exit 1), recorded in its history.

    Example: lesson-ledger cancel --provider 7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11
    --school school-1 --date 2025-09-05 --slot 8:30-9:00 --request-id cancel-1
    --reason "the student moved school"
    """
    lesson = (lesson_id, provider, school, date, slot)
    _change(LessonLedger.cancel, lesson, request_id, actor, reason, database_url, as_json)


def _change(
    change: Change,
    lesson: tuple[str | None, str | None, str | None, str | None, str | None],
    request_id: str,
    actor: str,
    reason: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """The change made on the lesson given by id or by key, and its answer printed."""
    lesson_id, *key = lesson
    wanted = lesson_id_from(lesson_id, *key)
    with opened_ledger(database_url) as ledger:
        try:
            result = change(
                ledger, lesson_id=wanted, request_id=request_id, actor=actor, reason=reason,
                source="cli",
            )  # fmt: skip
        except LessonNotFound:
            raise lesson_not_found(wanted, *key) from None
    print_result(result, as_json)
