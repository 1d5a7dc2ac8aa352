"""Proof (the tamper-evident log, `lesson-ledger audit` as a page): how many events the
tree covers, the latest signed checkpoint and the public key that checks it (to keep
apart from the ledger), the checkpoint as a file; an admin signs a checkpoint, or
verifies the log against the tree and that checkpoint, and the page follows the verify
(from any server process: adapters/storage/page_runs.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from adapters.audit.ledger_audit import LedgerAudit
from adapters.audit.signing import public_key_text
from adapters.http.pages.background import start_run
from adapters.http.pages.rendering import render
from adapters.http.pages.session import PostedBy, SignedIn, admin_only
from adapters.storage.page_runs import PageRuns
from projections.merkle.audit import AuditReport

router = APIRouter(include_in_schema=False)
VERIFY_RUN = "verify-log"


@router.get("/proof")
def proof_page(request: Request, browser: SignedIn) -> Response:
    audit: LedgerAudit = request.app.state.audit
    runs: PageRuns = request.app.state.page_runs
    verify_run = runs.latest(VERIFY_RUN)
    context: dict[str, Any] = {
        "browser": browser,
        "title": "Proof",
        "size": audit.tree.size(),
        "checkpoint": audit.latest_checkpoint(),
        "public_key": public_key_text(audit.signer.public_key),
        "verify": verify_run,
        "busy": verify_run is not None and verify_run.running,
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
    latest = audit.latest_checkpoint()
    start_run(
        request.app.state.page_runs,
        VERIFY_RUN,
        lambda count: audit.verify(latest, on_progress=count),
        AuditReport.as_json,
        total=audit.tree.size(),
    )
    return RedirectResponse("/proof", status_code=303)
