"""Students' data: `POST /v1/students/{student_id}/erasure` (admin) destroys the student's
key, which erases every part of theirs in every lesson, and every lesson content made for
them (adapters/keys/erasure.py); `GET /v1/students/erasures` (admin) lists every erasure
as recorded. The student id is in the path as the design names it; the request log shows
the route, never the id."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from adapters.calendar import ApiModel
from adapters.http.dependencies import PROBLEMS, Admin
from adapters.http.problems import ApiProblem
from adapters.keys.erasure import Erasure, ErasureKind, Erasures
from projections.merkle.checkpoint import erasures_covered

router = APIRouter(prefix="/v1/students", tags=["students"])


class ErasureBody(ApiModel):
    """Why the student's data is erased (say why, not who: it is kept with the record)."""

    reason: str = Field(min_length=1, max_length=500)


class ErasureRecord(BaseModel):
    """An erasure as recorded: when, who, why, how many keys and lessons it reached;
    nothing of the student in it."""

    erasure_id: str
    kind: ErasureKind = Field(
        description="`student`: one student's key; `retention`: the keys of lesson dates "
        "before a cut-off"
    )
    erased_at: datetime
    actor: str = Field(description="who erased: the token's actor, or `retention`")
    reason: str
    keys: int = Field(description="data keys destroyed")
    lessons: int = Field(description="lessons that held something sealed under them")

    @classmethod
    def of(cls, erasure: Erasure) -> ErasureRecord:
        return cls.model_validate(vars(erasure))


class ErasureList(BaseModel):
    """Every erasure, oldest first."""

    erasures: list[ErasureRecord]
    covered: int = Field(
        description="how many of them, the first, the latest signed checkpoint covers "
        "(`lesson-ledger audit verify --against` it checks those)"
    )


@router.get("/erasures", responses=PROBLEMS)
def list_erasures(request: Request, token: Admin) -> ErasureList:
    """Every erasure, oldest first, as `lesson-ledger students erasures` lists them: the
    proof that a student's erasure, or a retention run, was carried out."""
    erasures: Erasures = request.app.state.erasures
    return ErasureList(
        erasures=[ErasureRecord.of(record) for record in erasures.records()],
        covered=erasures_covered(request.app.state.audit.latest_checkpoint()),
    )


# `:path`: a school's student id may hold a slash (`2024/123`), as requests take it; sent
# as %2F it arrives decoded, and a plain segment left it unrouted (a bare 404).
@router.post("/{student_id:path}/erasure", responses=PROBLEMS)
def erase_student(
    student_id: str, body: ErasureBody, request: Request, token: Admin
) -> ErasureRecord:
    """Erase a student's data: their details in every lesson, and every content made for
    them, can no longer be opened; the lessons, their keys and history stay. 404 for a
    student the ledger holds no data of (unknown, or erased before). A student id with a
    slash is sent as it is or as %2F."""
    erasures: Erasures = request.app.state.erasures
    done = erasures.erase_student(student_id, actor=token.actor, reason=body.reason)
    if done is None:
        raise ApiProblem(
            404,
            "not-found",
            "No such student",
            "the ledger holds no data of this student (unknown, or erased before)",
        )
    return ErasureRecord.of(done)
