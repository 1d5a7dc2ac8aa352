"""Operations endpoints: liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.http.generation_metrics import token_totals_text
from adapters.http.schemas import Health
from domain import LedgerUnavailable

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", responses={503: {"description": "Not ready"}})
def ready(request: Request) -> Any:
    """Readiness: the database answers; how far each projection lags behind the log."""
    try:
        statuses = request.app.state.read_model.status()
    except Exception as error:  # any failure to read means not ready
        raise LedgerUnavailable(f"the database does not answer: {error}") from None
    return {
        "status": "ready",
        "projections": {
            status.name: {"position": status.position, "lag": status.lag} for status in statuses
        },
    }


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text."""
    metrics = request.app.state.metrics
    for status in request.app.state.read_model.status():
        metrics.projection_lag.labels(status.name).set(status.lag)
    text = generate_latest(metrics.exposed())
    usage = getattr(request.app.state, "generation_usage", None)
    if usage is not None:
        text += token_totals_text(usage)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
