"""The read side with N events in the store: filling the store through the ledger,
projection catch-up and a full rebuild (in a process of its own, for its peak RSS), and
the latency of a lesson's history and of a provider's week from the read model.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.stores import StoreSpec
from benchmarks.workload import LESSONS_PER_WEEK, provider_id, requests, week_of
from benchmarks.writes import WORKER_ENV, _chunks

POPULATION = "population"
LESSONS_PER_PROVIDER = 400  # ten weeks of a provider's calendar
POPULATE_BATCH = 500  # the ledger's largest batch


@dataclass(frozen=True)
class Population:
    """What the store was filled with: lessons (one event each, `OpenedByRequest`), in
    what time."""

    lessons: int
    events: int
    seconds: float


def populate(spec: StoreSpec, events: int, workers: int) -> Population:
    """`events` events: as many new lessons requested through `request_batch`, by
    `workers` processes (filling is not what is measured; it just has to be quick)."""
    lessons = max(1, events)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    shares = _chunks(range(lessons), workers)
    processes = [
        context.Process(
            target=_populate_share, args=(spec, share[0], len(share), results), daemon=True
        )
        for share in shares
        if share
    ]
    began = time.monotonic()
    for process in processes:
        process.start()
    written = [results.get(timeout=7200) for _ in processes]
    for process in processes:
        process.join(60)
    failed = [w for w in written if isinstance(w, str)]
    if failed:
        raise RuntimeError(f"filling the store failed: {failed[0]}")
    return Population(lessons, sum(written), time.monotonic() - began)


def _populate_share(spec: StoreSpec, first: int, count: int, results: Any) -> None:
    os.environ.update(WORKER_ENV)
    from adapters.eventstore import open_ledger

    try:
        ledger = open_ledger(spec.ledger_url)
        accepted = 0
        for start in range(first, first + count, POPULATE_BATCH):
            size = min(POPULATE_BATCH, first + count - start)
            work = requests(POPULATION, start, size, per_provider=LESSONS_PER_PROVIDER)
            result = ledger.request_batch(
                [r.as_ledger_item() for r in work], batch_id=f"{POPULATION}-{start}"
            )
            accepted += sum(1 for item in result.items if item.outcome == "accepted")
        ledger.close()
        results.put(accepted)
    except Exception as error:  # reported by the parent
        results.put(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class CatchUp:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def catch_up(spec: StoreSpec) -> CatchUp:
    """The lessons table, empty, brought up to the head of the log."""
    from adapters.read_model import open_read_model

    model = open_read_model(spec.ledger_url)
    try:
        began = time.perf_counter()
        result = model.catch_up()
        return CatchUp(result.events, time.perf_counter() - began)
    finally:
        model.close()


@dataclass(frozen=True)
class Rebuild:
    events: int
    seconds: float
    peak_rss_mb: float
    rss_before_mb: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def rebuild(spec: StoreSpec) -> Rebuild:
    """A full rebuild (shadow table from the first event, then the swap), in a fresh
    process: its peak RSS is the rebuild's."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_rebuild_child, args=(spec, results), daemon=True)
    process.start()
    outcome = results.get(timeout=7200)
    process.join(60)
    if isinstance(outcome, str):
        raise RuntimeError(f"the rebuild failed: {outcome}")
    return Rebuild(**outcome)


def _rebuild_child(spec: StoreSpec, results: Any) -> None:
    from adapters.read_model import open_read_model

    try:
        model = open_read_model(spec.ledger_url)
        before = _peak_rss_mb()
        began = time.perf_counter()
        result = model.rebuild(restart=True)
        seconds = time.perf_counter() - began
        model.close()
        results.put(
            {
                "events": result.events,
                "seconds": seconds,
                "peak_rss_mb": _peak_rss_mb(),
                "rss_before_mb": before,
            }
        )
    except Exception as error:  # reported by the parent
        results.put(f"{type(error).__name__}: {error}")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float


def query_latencies(spec: StoreSpec, lessons: int, samples: int) -> dict[str, Latency]:
    """History of one lesson (from its events) and one provider's week (from the read
    model), for random lessons and weeks of the population, one at a time."""
    from adapters.eventstore import open_ledger
    from adapters.read_model import open_read_model

    rng = random.Random(7)
    ledger = open_ledger(spec.ledger_url)
    model = open_read_model(spec.ledger_url, ledger=ledger)
    try:

        def history() -> Any:
            number = rng.randrange(lessons)
            r = requests(POPULATION, number, 1, per_provider=LESSONS_PER_PROVIDER)[0]
            lesson_id = r.lesson_id
            return lambda: ledger.history(lesson_id)

        providers = max(1, -(-lessons // LESSONS_PER_PROVIDER))
        weeks = -(-min(lessons, LESSONS_PER_PROVIDER) // LESSONS_PER_WEEK)

        def week() -> Any:
            provider = provider_id(POPULATION, rng.randrange(providers))
            monday, sunday = week_of(rng.randrange(weeks))
            return lambda: model.list_lessons(
                provider_id=provider, date_from=monday, date_to=sunday, limit=100
            )

        return {
            "history": timed(history, samples),
            "week_query": timed(week, samples),
        }
    finally:
        model.close()
        ledger.close()


def timed(make_call: Any, samples: int) -> Latency:
    """p50 and p99 of `samples` calls, each made by `make_call()`, after a warm-up."""
    for _ in range(min(50, samples)):  # warm up: connections, prepared statements
        make_call()()
    timings = []
    for _ in range(samples):
        call = make_call()
        began = time.perf_counter()
        call()
        timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    return Latency(samples, _percentile(timings, 50), _percentile(timings, 99))


def _percentile(ordered: list[float], percent: float) -> float:
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]
