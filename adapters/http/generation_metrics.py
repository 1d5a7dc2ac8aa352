"""Token totals in /metrics, read from the database at each scrape.

Worker processes count what each attempt used in the ledger's database
(adapters/storage/usage.py); the API's /metrics reports the totals from there, so every
API process (`serve --workers N`) reports the same, cluster-wide figures, a worker
killed with SIGKILL loses none of them, and worker processes need no port of their own.
Labels: the model and the kind of token (prompt, completion); never a provider, a lesson
or anything from the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.storage.usage import SqlUsageStore


class TokenTotals(Collector):
    """`lesson_ledger_generation_tokens_total{model,kind}` and
    `lesson_ledger_generation_attempts_total{model}` (attempts that called, or would have
    called, a generator)."""

    def __init__(self, usage: SqlUsageStore) -> None:
        self.usage = usage

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "lesson_ledger_generation_tokens",
            "Tokens used generating lessons, all worker processes",
            labels=["model", "kind"],
        )
        attempts = CounterMetricFamily(
            "lesson_ledger_generation_attempts",
            "Generation attempts counted against the token budget, all worker processes",
            labels=["model"],
        )
        for model, prompt, completion, count in self.usage.totals():
            tokens.add_metric([model, "prompt"], prompt)
            tokens.add_metric([model, "completion"], completion)
            attempts.add_metric([model], count)
        yield tokens
        yield attempts


def token_totals_text(usage: SqlUsageStore) -> bytes:
    """The totals as Prometheus text, to follow the rest of /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TokenTotals(usage))
    return generate_latest(registry)
