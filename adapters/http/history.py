"""A lesson's history: every event and turned-away request, in order, and its state as it
was (`as_of_version`, `as_of`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request

from adapters.http.commands import owned
from adapters.http.dependencies import PROBLEMS, Reader, Reads, WholeNumber
from adapters.http.proofs import checkpoint_response, proof_response
from adapters.http.reads import MinPosition, check_min_position
from adapters.http.schemas import HistoryResponse
from domain import FieldError, InvalidLessonRequest, LessonHistory, LessonLedger

router = APIRouter(prefix="/v1/lessons", tags=["lessons"])


@router.get("/{lesson_id}/history", responses=PROBLEMS)
def history(
    lesson_id: UUID,
    request: Request,
    token: Reader,
    reads: Reads,
    as_of_version: Annotated[WholeNumber | None, Query(ge=1)] = None,
    as_of: Annotated[datetime | None, Query(description="ISO timestamp with zone")] = None,
    min_position: MinPosition = None,
    proof: Annotated[
        bool, Query(description="with each event's inclusion proof and their checkpoint")
    ] = False,
) -> HistoryResponse:
    """Every event and rejected attempt of a lesson, in order, and its state as it was.
    From the read replica once it has the command's event (`min_position`), else the
    primary. With `proof=true`, each event's inclusion proof in a signed checkpoint (an
    event not yet in the tree has none)."""
    if as_of is not None and as_of.tzinfo is None:
        raise InvalidLessonRequest(
            [FieldError(field="as_of", message="needs a time zone, e.g. ...+00:00")]
        )
    check_min_position(reads.primary, min_position)

    def read(ledger: LessonLedger) -> LessonHistory:
        owned(ledger, lesson_id, token)
        return ledger.history(lesson_id, as_of_version=as_of_version, as_of=as_of)

    wait = request.app.state.settings.min_position_wait_seconds
    found = reads.history(min_position, wait, read)
    state = found.state.as_dict() if found.state else None
    if found.state is not None and state is not None:
        state.pop("students", None)
        state.pop("details", None)
        state["content_erased"] = found.state.content_erased
    entries = [vars(entry) for entry in found.entries]
    checkpoint = None
    if proof:
        signed, proofs = request.app.state.audit.event_proofs(lesson_id)
        checkpoint = checkpoint_response(signed)
        for entry in entries:
            found_proof = proofs.get(entry["version"])
            entry["proof"] = None if found_proof is None else proof_response(found_proof)
    return HistoryResponse.model_validate(
        {"lesson_id": lesson_id, "entries": entries, "state": state, "checkpoint": checkpoint}
    )
