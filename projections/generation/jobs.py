"""A job: one requested attempt to generate, with its priority; and the job queue port
that lets several worker processes share the jobs (adapters/postgres/jobs.py).

Priority comes from the requesting event, so that interactive work goes first:

- INTERACTIVE (0): a request made by someone waiting for it: `source` "api" (a single
  lesson, a calendar batch, a regeneration from the app) or a single `lesson-ledger
  request` ("cli" without a correlation id).
- BULK (1): work nobody waits on: `source` "import" or "worker"; a "cli" request that is
  part of a batch (it has a correlation id: `lesson-ledger batch FILE`); and any request
  whose correlation id starts with `bulk:` (the mark for regenerations after an import
  or a retention run, whatever sent them).

Within a priority, jobs go in log order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from domain.lesson import LessonSlot

INTERACTIVE = 0
BULK = 1
BULK_CORRELATION_PREFIX = "bulk:"
PRIORITY_NAMES = {INTERACTIVE: "interactive", BULK: "bulk"}


@dataclass(frozen=True)
class Job:
    """One attempt to generate: the requesting event's slot, attempt and position."""

    lesson_id: UUID
    attempt: int
    notification_id: int
    priority: int = INTERACTIVE

    @classmethod
    def of(cls, event: LessonSlot.LessonRequested, notification_id: int) -> Job:
        return cls(event.originator_id, event.attempt, notification_id, priority_of(event))


def priority_of(event: LessonSlot.Event) -> int:
    """INTERACTIVE or BULK, from who sent the request and in what batch (see above)."""
    correlation = event.correlation_id or ""
    if correlation.startswith(BULK_CORRELATION_PREFIX):
        return BULK
    if event.source in ("import", "worker"):
        return BULK
    if event.source == "cli" and correlation:
        return BULK
    return INTERACTIVE


class JobQueue(Protocol):
    """Requested attempts as rows that worker processes claim (PostgreSQL).

    At least once: a claim is a lease that its holder renews while it works; a holder
    that dies stops renewing, and its jobs are claimed again when the lease runs out. A
    job is claimed by one holder at a time, in priority order, then log order.
    """

    def add(self, jobs: Sequence[Job]) -> int:
        """Add jobs not yet there (idempotent) and tell waiting claimers; how many new."""
        ...

    def claim(self, holder: str, limit: int, lease_seconds: float) -> list[Job]:
        """Up to `limit` jobs nobody holds (or whose lease ran out), now `holder`'s."""
        ...

    def renew(self, holder: str, notification_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend the holder's leases on these jobs; how many it still held."""
        ...

    def finish(self, notification_id: int, outcome: str) -> None:
        """The job's attempt is finished (recorded, or found decided): never claimed again."""
        ...

    def release(self, holder: str, notification_ids: Sequence[int]) -> None:
        """Give the jobs back unfinished, for anyone to claim at once."""
        ...
