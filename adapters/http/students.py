"""Students' data: `POST /v1/students/{student_id}/erasure` (admin) destroys the student's
key, which erases every part of theirs in every lesson, and every lesson content made for
them (adapters/keys/erasure.py). The student id is in the path as the design names it;
the request log shows the route, never the id."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from adapters.calendar import ApiModel
from adapters.http.dependencies import PROBLEMS, Admin
from adapters.http.problems import ApiProblem
from adapters.keys.erasure import Erasures

router = APIRouter(prefix="/v1/students", tags=["students"])


class ErasureBody(ApiModel):
    """Why the student's data is erased (say why, not who: it is kept with the record)."""

    reason: str = Field(min_length=1, max_length=500)


class ErasureResponse(BaseModel):
    """The erasure as recorded: nothing of the student in it."""

    erasure_id: str
    erased_at: datetime
    keys: int
    lessons: int


@router.post("/{student_id}/erasure", responses=PROBLEMS)
def erase_student(
    student_id: str, body: ErasureBody, request: Request, token: Admin
) -> ErasureResponse:
    """Erase a student's data: their details in every lesson, and every content made for
    them, can no longer be opened; the lessons, their keys and history stay. 404 for a
    student the ledger holds no data of (unknown, or erased before)."""
    erasures: Erasures = request.app.state.erasures
    done = erasures.erase_student(student_id, actor=token.actor, reason=body.reason.strip())
    if done is None:
        raise ApiProblem(
            404,
            "not-found",
            "No such student",
            "the ledger holds no data of this student (unknown, or erased before)",
        )
    return ErasureResponse(
        erasure_id=done.erasure_id, erased_at=done.erased_at, keys=done.keys, lessons=done.lessons
    )
