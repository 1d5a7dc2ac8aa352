"""The tamper-evident log over HTTP: the latest signed checkpoint, and the proof that it
extends an earlier tree. (A lesson's events' inclusion proofs come with its history:
`GET /v1/lessons/{id}/history?proof=true`.) Nothing here is secret."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from adapters.audit.ledger_audit import LedgerAudit
from adapters.http.dependencies import PROBLEMS, Reader, WholeNumber
from adapters.http.problems import ApiProblem
from adapters.http.schemas import CheckpointResponse, ConsistencyResponse, EventProofResponse
from domain import FieldError, InvalidLessonRequest
from projections.merkle.checkpoint import Checkpoint
from projections.merkle.verify import EventProof

router = APIRouter(prefix="/v1/audit", tags=["audit"])


async def audit_of(request: Request) -> LedgerAudit:
    audit: LedgerAudit = request.app.state.audit
    return audit


Audit = Annotated[LedgerAudit, Depends(audit_of)]


@router.get("/checkpoint", responses=PROBLEMS)
def checkpoint(token: Reader, audit: Audit) -> CheckpointResponse:
    """The latest signed checkpoint (404 before the first: `lesson-ledger audit
    checkpoint`, a history read with `proof=true`, or the setting
    LESSON_LEDGER_CHECKPOINT_EVERY_SECONDS make one)."""
    latest = audit.latest_checkpoint()
    if latest is None:
        raise ApiProblem(404, "no-checkpoint", "No checkpoint yet", "no checkpoint was signed yet")
    return checkpoint_response(latest)


@router.get("/consistency", responses=PROBLEMS)
def consistency(
    token: Reader, audit: Audit, from_size: Annotated[WholeNumber, Query(ge=1)]
) -> ConsistencyResponse:
    """The proof that the latest checkpoint's tree extends the tree of the first
    `from_size` events (one an auditor kept); a checkpoint is signed first if none
    covers `from_size` events yet."""
    size = audit.tree.size()
    if from_size > size:
        raise InvalidLessonRequest(
            [FieldError(field="from_size", message=f"is beyond the tree's {size} events")]
        )
    signed = audit.covering(from_size)
    return ConsistencyResponse(
        from_size=from_size,
        checkpoint=checkpoint_response(signed),
        proof=[node.hex() for node in audit.consistency(from_size, signed)],
    )


def checkpoint_response(checkpoint: Checkpoint) -> CheckpointResponse:
    return CheckpointResponse.model_validate(checkpoint.as_json())


def proof_response(proof: EventProof) -> EventProofResponse:
    return EventProofResponse.model_validate(proof.as_json())
