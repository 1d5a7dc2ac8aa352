"""The generation job queue on PostgreSQL (projections/generation/jobs.py is the port,
projections/generation/queue.py the feeder and claimers; the choice of this over a
queue library is docs/decisions/0040-generation-job-queue.md).

`<schema>.generation_jobs`: one row per requested attempt, keyed by the requesting
event's notification id (and unique by lesson and attempt). A claim is one statement:
the pending rows nobody holds (or whose lease ran out), in priority and log order,
locked with `FOR UPDATE SKIP LOCKED` so that racing claimers take different rows
without waiting on each other, then marked with the holder and the lease's end. Leases
are on the database's clock, so the processes' clocks do not matter. Finished rows stay,
with their outcome and how often they were claimed (`claims`): the queue's history.

Adding jobs NOTIFYs the channel `<schema>_generation_jobs` in the same transaction, so
claimers waiting on it wake when the jobs are there to claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from adapters.storage.sqlstore import SqlStore
from projections.generation.jobs import Job

_TABLE = "generation_jobs"


def channel_name(schema: str) -> str:
    """The channel claimers LISTEN on."""
    return f"{schema}_generation_jobs"


class PostgresJobQueue:
    """The job table on the store's database (created on first use)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.table = store.table(_TABLE)
        self.channel = channel_name(store.database.schema)
        store.create_tables(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "notification_id bigint PRIMARY KEY, "
            "lesson_id uuid NOT NULL, "
            "attempt integer NOT NULL, "
            "priority smallint NOT NULL, "
            "added_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
            "claimed_by text, "
            "lease_expires_at timestamptz, "
            "claims integer NOT NULL DEFAULT 0, "
            "finished_at timestamptz, "
            "outcome text, "
            "UNIQUE (lesson_id, attempt))",
            f"CREATE INDEX IF NOT EXISTS {_TABLE}_pending ON {self.table} "
            "(priority, notification_id) WHERE finished_at IS NULL",
        )

    def add(self, jobs: Sequence[Job]) -> int:
        if not jobs:
            return 0
        with self.store.transaction() as cursor:
            rows = cursor.run(
                f"INSERT INTO {self.table} (notification_id, lesson_id, attempt, priority) "
                "SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::int[], %s::smallint[]) "
                "ON CONFLICT DO NOTHING RETURNING notification_id",
                (
                    [job.notification_id for job in jobs],
                    [job.lesson_id for job in jobs],
                    [job.attempt for job in jobs],
                    [job.priority for job in jobs],
                ),
            )
            if rows:
                cursor.run("SELECT pg_notify(%s, '')", (self.channel,))
        return len(rows)

    def claim(self, holder: str, limit: int, lease_seconds: float) -> list[Job]:
        if limit < 1:
            return []
        rows = self.store.run(
            f"WITH picked AS (SELECT notification_id FROM {self.table} "
            "WHERE finished_at IS NULL "
            "AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp()) "
            "ORDER BY priority, notification_id LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self.table} AS j SET claimed_by = %s, claims = j.claims + 1, "
            "lease_expires_at = clock_timestamp() + make_interval(secs => %s) "
            "FROM picked WHERE j.notification_id = picked.notification_id "
            "RETURNING j.lesson_id, j.attempt, j.notification_id, j.priority",
            (limit, holder, lease_seconds),
        )
        jobs = [
            Job(_uuid(lesson), int(attempt), int(nid), int(prio))
            for lesson, attempt, nid, prio in rows
        ]
        return sorted(jobs, key=lambda job: (job.priority, job.notification_id))

    def renew(self, holder: str, notification_ids: Sequence[int], lease_seconds: float) -> int:
        rows = self.store.run(
            f"UPDATE {self.table} SET "
            "lease_expires_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE notification_id = ANY(%s) AND claimed_by = %s AND finished_at IS NULL "
            "RETURNING notification_id",
            (lease_seconds, list(notification_ids), holder),
        )
        return len(rows)

    def finish(self, notification_id: int, outcome: str) -> None:
        self.store.run(
            f"UPDATE {self.table} SET finished_at = clock_timestamp(), outcome = %s, "
            "lease_expires_at = NULL WHERE notification_id = %s AND finished_at IS NULL",
            (outcome, notification_id),
        )

    def release(self, holder: str, notification_ids: Sequence[int]) -> None:
        rows = self.store.run(
            f"UPDATE {self.table} SET claimed_by = NULL, lease_expires_at = NULL "
            "WHERE notification_id = ANY(%s) AND claimed_by = %s AND finished_at IS NULL "
            "RETURNING notification_id",
            (list(notification_ids), holder),
        )
        if rows:
            self.store.run("SELECT pg_notify(%s, '')", (self.channel,))

    def counts(self) -> dict[str, int]:
        """Jobs by state: pending (unclaimed or lease run out), claimed, finished."""
        rows = self.store.run(
            "SELECT CASE WHEN finished_at IS NOT NULL THEN 'finished' "
            "WHEN lease_expires_at > clock_timestamp() THEN 'claimed' ELSE 'pending' END, "
            f"count(*) FROM {self.table} GROUP BY 1"
        )
        return {str(state): int(count) for state, count in rows}


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
