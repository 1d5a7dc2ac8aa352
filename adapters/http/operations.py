"""Operations endpoints: liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.http.generation_metrics import token_totals_text
from adapters.http.schemas import Health
from adapters.release import VERSION
from domain import LedgerUnavailable

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok", version=VERSION)


@router.get("/ready", responses={503: {"description": "Not ready"}})
def ready(request: Request) -> Any:
    """Readiness: the database answers; how far each projection lags behind the log; and,
    with a read replica, its state and lag (a replica down or behind sends reads to the
    primary: the server stays ready)."""
    try:
        statuses = [*request.app.state.read_model.status(), request.app.state.audit.status()]
    except Exception as error:  # any failure to read means not ready
        raise LedgerUnavailable(f"the database does not answer: {error}") from None
    answer: dict[str, Any] = {
        "status": "ready",
        "projections": {
            status.name: {"position": status.position, "lag": status.lag} for status in statuses
        },
    }
    replica = request.app.state.reads.status()
    if replica is not None:
        answer["replica"] = replica.as_json()
    return answer


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text."""
    metrics = request.app.state.metrics
    for status in [*request.app.state.read_model.status(), request.app.state.audit.status()]:
        metrics.projection_lag.labels(status.name).set(status.lag)
    metrics.show_replica(request.app.state.reads.status())
    text = generate_latest(metrics.exposed())
    usage = getattr(request.app.state, "generation_usage", None)
    if usage is not None:
        text += token_totals_text(usage)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
