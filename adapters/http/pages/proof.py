"""Proof (the tamper-evident log, `lesson-ledger audit` as a page): how many events the
tree covers, the latest signed checkpoint and the public key that checks it (to keep
apart from the ledger), the checkpoint as a file; an admin signs a checkpoint, or
verifies the log against the tree and that checkpoint, and the page follows the verify."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from adapters.audit.ledger_audit import LedgerAudit
from adapters.audit.signing import public_key_text
from adapters.http.pages.background import Run, running, started
from adapters.http.pages.rendering import render
from adapters.http.pages.session import PostedBy, SignedIn, admin_only
from projections.merkle.audit import AuditReport

router = APIRouter(include_in_schema=False)


@router.get("/proof")
def proof_page(request: Request, browser: SignedIn) -> Response:
    audit: LedgerAudit = request.app.state.audit
    verify_run: Run[AuditReport] | None = getattr(request.app.state, "audit_run", None)
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Proof",
        "size": audit.tree.size(),
        "checkpoint": audit.latest_checkpoint(),
        "public_key": public_key_text(audit.signer.public_key),
        "verify": verify_run,
        "busy": running(verify_run),
        "now": datetime.now(UTC),
    }
    return render(request, "proof.html", context)


@router.get("/proof/checkpoint.json")
def checkpoint_file(request: Request, browser: SignedIn) -> Response:
    """The latest checkpoint as `audit checkpoint` writes it: keep it, and later check
    the ledger against it (`lesson-ledger audit verify --against FILE`)."""
    latest = request.app.state.audit.latest_checkpoint()
    if latest is None:
        return RedirectResponse("/proof", status_code=303)
    name = f"checkpoint-{latest.size}-{latest.time.astimezone(UTC):%Y%m%dT%H%M%SZ}.json"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return JSONResponse(latest.as_json(), headers=disposition)


@router.post("/proof/checkpoint")
def sign_checkpoint(request: Request, browser: PostedBy) -> Response:
    """Sign the tree as it is now (as `lesson-ledger audit checkpoint`)."""
    admin_only(browser, "signing and verifying")
    request.app.state.audit.checkpoint()
    return RedirectResponse("/proof", status_code=303)


@router.post("/proof/verify")
def start_verify(request: Request, browser: PostedBy) -> Response:
    """Verify the log against the tree and the latest checkpoint, in the background (as
    `lesson-ledger audit verify --against` that checkpoint)."""
    admin_only(browser, "signing and verifying")
    audit: LedgerAudit = request.app.state.audit
    if not running(getattr(request.app.state, "audit_run", None)):
        latest = audit.latest_checkpoint()
        request.app.state.audit_run = started(
            "verify-log",
            lambda run: audit.verify(latest, on_progress=run.count),
            total=audit.tree.size(),
        )
    return RedirectResponse("/proof", status_code=303)
