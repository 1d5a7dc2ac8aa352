"""Prometheus metrics: commands by outcome, batch sizes, command latency, projection lag."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        )
