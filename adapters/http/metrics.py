"""Prometheus metrics: commands by outcome, batch sizes, command latency, projection lag,
reads by source (replica or primary), the read replica's lag, and the release
(`lesson_ledger_build_info`).

With `lesson-ledger serve --workers N` each server process counts its own requests;
`serve` gives them one directory (prometheus_client's multiprocess mode,
PROMETHEUS_MULTIPROC_DIR), and `/metrics`, whichever process answers, reports the
sums over all of them. One process alone reports from its own registry.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from adapters.postgres.replica import ReplicaStatus
from adapters.release import VERSION

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The API's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "lesson_ledger_commands",
            "Commands by name and outcome",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lesson_ledger_batch_size",
            "Items per batch request",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500),
            registry=self.registry,
        )
        self.latency = Histogram(
            "lesson_ledger_command_seconds",
            "Command latency",
            ["command"],
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "lesson_ledger_projection_lag",
            "Events the projection has yet to process",
            ["projection"],
            registry=self.registry,
            # Every process reads the same lag from the database: the latest is the one.
            multiprocess_mode="mostrecent",
        )

        self.reads = Counter(
            "lesson_ledger_reads",
            "Read-model queries and histories answered, by source (replica or primary)",
            ["source"],
            registry=self.registry,
        )
        self.replica_lag = Gauge(
            "lesson_ledger_replica_lag_seconds",
            "How far the read replica is behind the primary (-1: down or unknown)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.replica_serving = Gauge(
            "lesson_ledger_replica_serving",
            "1 while reads go to the read replica, 0 while they go to the primary",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # The release as a label of a constant 1 (prometheus_client's Info has no
        # multiprocess mode): a dashboard sees which release each server runs.
        Gauge(
            "lesson_ledger_build_info",
            "The release this server runs (its version as a label)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        ).labels(VERSION).set(1)

    def show_replica(self, status: ReplicaStatus | None) -> None:
        """Set the replica's gauges from its status (nothing without a read replica)."""
        if status is None:
            return
        self.replica_lag.set(-1 if status.lag_seconds is None else status.lag_seconds)
        self.replica_serving.set(1 if status.state == "serving" else 0)

    def exposed(self) -> CollectorRegistry:
        """The registry `/metrics` reports: all server processes' sums in multiprocess
        mode, else this one's own."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
