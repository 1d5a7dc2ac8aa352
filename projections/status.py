"""Where each projection stands: its position, the head of the log, the lag, whether a
runner is active, and a rebuild's progress (from any process: it is all stored)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from projections.log import EventLog
from projections.view import LIVE, PROJECTION_NAME, SHADOW, LessonsView


@dataclass(frozen=True)
class RebuildProgress:
    """A rebuild under way (`running`) or interrupted (resumable with `rebuild`)."""

    position: int
    head: int
    started_at: datetime | None
    running: bool

    @property
    def fraction(self) -> float:
        """Rough share done: positions are notification ids, which have gaps."""
        return 1.0 if self.head <= 0 else min(1.0, self.position / self.head)


@dataclass(frozen=True)
class ProjectionStatus:
    """One projection's state.

    `lag` is the number of events recorded after `position` (not `head - position`:
    notification ids have gaps).
    """

    name: str
    position: int
    head: int
    lag: int
    runner_active: bool
    rebuild: RebuildProgress | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.rebuild is not None:
            data["rebuild"]["fraction"] = round(self.rebuild.fraction, 4)
            started = self.rebuild.started_at
            data["rebuild"]["started_at"] = started.isoformat() if started else None
        return data


def lessons_status(view: LessonsView, log: EventLog) -> ProjectionStatus:
    """The lessons projection's status."""
    head = log.head()
    position = view.position(LIVE) or 0
    rebuild = None
    # Whether a rebuild runs, asked before and after its shadow table is read: asked only
    # after, a rebuild that swapped and let go in between looked interrupted (and the
    # Operations page stopped following it); only before, one that had just begun did.
    shadow_lock = view.runner_lock(SHADOW)
    taken = shadow_lock.is_taken()
    shadow_position = view.position(SHADOW)
    if shadow_position is not None:
        rebuild = RebuildProgress(
            position=shadow_position,
            head=head,
            started_at=view.rebuild_started_at(),
            running=taken or shadow_lock.is_taken(),
        )
    return ProjectionStatus(
        name=PROJECTION_NAME,
        position=position,
        head=head,
        lag=view.count_events_after(position),
        runner_active=view.runner_lock(LIVE).is_taken(),
        rebuild=rebuild,
    )
