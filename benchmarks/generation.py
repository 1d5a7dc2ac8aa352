"""Lesson generation at scale: `lesson-ledger worker` processes on one PostgreSQL against
a fake OpenAI-compatible model that answers every call after a fixed latency (the tests'
fake, tests/support/fake_openai.py, on loopback in this process).

For each latency and number of worker processes: `rounds` x workers x concurrency
lessons requested in one batch (`request_batch`, interactive), timed from the batch's
commit to the last job finished (both on the database's clock), and the most calls the
model saw in flight at once. The calls allowed in flight are workers x concurrency: with
enough lessons that bound is the throughput, (calls allowed in flight) / latency.

Then a calendar week at the defaults: one worker process with its default concurrency,
a batch of 40 lessons, timed the same way (target: within 1.5 x the latency).

Each measurement runs in a fresh schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from adapters.eventstore import open_ledger
from adapters.keys.keyfile import KEY_FILE_SETTING
from benchmarks.stores import StoreSpec, create_store, drop_store
from benchmarks.workload import requests
from domain.batches import MAX_BATCH_SIZE
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI

READY_WITHIN_S = 60.0
DEFAULT_CONCURRENCY = 64  # the worker's default (adapters/worker.py)
CALENDAR_WEEK = 40


@dataclass(frozen=True)
class GenerationRun:
    """One measurement: lessons over seconds, and the model's most calls in flight."""

    latency_s: float
    workers: int
    concurrency: int
    lessons: int
    seconds: float
    peak_in_flight: int
    outcomes: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.lessons / self.seconds if self.seconds else 0.0

    @property
    def allowed_in_flight(self) -> int:
        return self.workers * self.concurrency

    @property
    def bound_per_second(self) -> float:
        """What the calls allowed in flight permit: allowed / latency."""
        return self.allowed_in_flight / self.latency_s


def measure(
    database_url: str | None,
    latencies: Sequence[float],
    workers: Sequence[int],
    concurrency: int,
    rounds: int,
    slow_rounds: int,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """The generation figures, as `benchmarks.run` puts them in its table and JSON."""
    runs: list[GenerationRun] = []
    weeks: list[GenerationRun] = []
    for latency in latencies:
        count = rounds if latency < 5 else slow_rounds
        for n in workers:
            lessons = count * n * concurrency
            step(f"generation: {n} worker(s) x {concurrency}, model at {latency:g} s, "
                 f"{lessons} lessons")  # fmt: skip
            run = _run(database_url, latency, n, concurrency, lessons)
            step(f"generation: {run.per_second:.1f} lessons/s, {run.peak_in_flight} in flight")
            runs.append(run)
        step(f"generation: a calendar week ({CALENDAR_WEEK}) at the defaults, {latency:g} s")
        week = _run(database_url, latency, 1, DEFAULT_CONCURRENCY, CALENDAR_WEEK, default=True)
        step(f"generation: {week.seconds:.2f} s for {CALENDAR_WEEK} lessons")
        weeks.append(week)
    return figures(runs, weeks)


def figures(runs: Sequence[GenerationRun], weeks: Sequence[GenerationRun]) -> dict[str, Any]:
    """`generation_lessons_per_s` keyed by workers, then latency; the rest alike."""

    def by_workers(value: Callable[[GenerationRun], float]) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for run in runs:
            table.setdefault(str(run.workers), {})[f"{run.latency_s:g}s"] = value(run)
        return table

    scaling = {}
    for latency in sorted({run.latency_s for run in runs}):
        rate = {run.workers: run.per_second for run in runs if run.latency_s == latency}
        if 1 in rate and 4 in rate and rate[1]:
            scaling[f"{latency:g}s"] = rate[4] / rate[1]
    ratios = [r.per_second / r.bound_per_second for r in runs]
    week_ratios = [w.seconds / w.latency_s for w in weeks]
    targets = {
        "lessons/s >= 0.8 x allowed in flight / latency": _met(
            bool(ratios) and min(ratios) >= 0.8, f"lowest {min(ratios, default=0):.2f}"
        ),
        "4 processes >= 3 x 1 process": _met(
            bool(scaling) and min(scaling.values()) >= 3.0,
            f"lowest {min(scaling.values(), default=0):.2f}",
        ),
        "calendar week of 40 within 1.5 x latency (defaults)": _met(
            bool(week_ratios) and max(week_ratios) <= 1.5,
            f"highest {max(week_ratios, default=0):.2f}",
        ),
    }
    return {
        "generation_targets": targets,
        "generation_concurrency": runs[0].concurrency if runs else None,
        "generation_lessons_per_s": by_workers(lambda r: round(r.per_second, 2)),
        "generation_bound_per_s": by_workers(lambda r: round(r.bound_per_second, 2)),
        "generation_ratio_to_bound": by_workers(
            lambda r: round(r.per_second / r.bound_per_second, 3)
        ),
        "generation_peak_in_flight": by_workers(lambda r: r.peak_in_flight),
        "generation_lessons": by_workers(lambda r: r.lessons),
        "generation_seconds": by_workers(lambda r: round(r.seconds, 3)),
        "generation_4_over_1": {k: round(v, 2) for k, v in scaling.items()},
        "generation_calendar_week_s": {f"{w.latency_s:g}s": round(w.seconds, 3) for w in weeks},
        "generation_calendar_week_over_latency": {
            f"{w.latency_s:g}s": round(w.seconds / w.latency_s, 3) for w in weeks
        },
        "generation_outcomes": {
            **{f"{r.workers}x{r.latency_s:g}s": r.outcomes for r in runs},
            **{f"{w.workers}x{w.latency_s:g}s-week": w.outcomes for w in weeks},
        },
    }


def _met(met: bool, detail: str) -> str:
    return f"{'met' if met else 'NOT met'} ({detail})"


def table_rows(f: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The generation figures as rows of `benchmarks.run`'s table."""
    rows: list[tuple[str, str, str, str, str]] = []
    concurrency = f.get("generation_concurrency")
    for workers, by_latency in f.get("generation_lessons_per_s", {}).items():
        for latency, rate in by_latency.items():
            peak = f["generation_peak_in_flight"][workers][latency]
            bound = f["generation_bound_per_s"][workers][latency]
            rows.append((
                f"generation, model at {latency}, {workers} worker process(es) x "
                f"{concurrency}: lessons/s (most calls in flight {peak})",
                f"{rate:.1f}", f"bound {bound:.1f}",
                f"{f['generation_ratio_to_bound'][workers][latency]:.2f} of bound", "",
            ))  # fmt: skip
    for latency, ratio in f.get("generation_4_over_1", {}).items():
        rows.append((f"generation at {latency}: 4 processes / 1", f"{ratio:.2f}", "", "", ""))
    for latency, seconds in f.get("generation_calendar_week_s", {}).items():
        over = f["generation_calendar_week_over_latency"][latency]
        rows.append((
            f"generation: a calendar week (40) at the defaults, model at {latency} (s)",
            f"{seconds:.2f}", "", f"{over:.2f} x latency", "",
        ))  # fmt: skip
    rows += [(f"generation target: {name}", verdict, "", "", "")
             for name, verdict in f.get("generation_targets", {}).items()]  # fmt: skip
    return rows


def _run(
    database_url: str | None,
    latency: float,
    workers: int,
    concurrency: int,
    lessons: int,
    *,
    default: bool = False,
) -> GenerationRun:
    spec = create_store("postgresql", database_url)
    folder = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    try:
        with FakeOpenAI(default=fake_openai.ok(delay=latency)) as fake:
            env = _worker_env(spec, fake.base_url)
            args = [] if default else ["--concurrency", str(concurrency)]
            ledger = open_ledger(spec.ledger_url)
            try:
                with _workers(spec, env, workers, args, folder):
                    started = _now(spec)
                    items = [r.as_ledger_item() for r in requests("gen", 0, lessons)]
                    for first in range(0, lessons, MAX_BATCH_SIZE):
                        chunk = items[first : first + MAX_BATCH_SIZE]
                        result = ledger.request_batch(chunk, mode="partial", batch_id="bench")
                        assert result.summary.get("accepted") == len(chunk), result.summary
                    seconds = _wait_finished(spec, lessons, started, timeout=120 + 20 * latency)
            finally:
                ledger.close()
            return GenerationRun(
                latency, workers, concurrency, lessons, seconds, fake.peak_in_flight,
                _outcomes(spec),
            )  # fmt: skip
    finally:
        drop_store(spec)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _worker_env(spec: StoreSpec, base_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LESSON_LEDGER_") or k == KEY_FILE_SETTING
    }
    env.update(
        {
            "LESSON_LEDGER_GENERATOR": "openai",
            "LESSON_LEDGER_OPENAI_BASE_URL": base_url,
            "LESSON_LEDGER_OPENAI_MODEL": "fake-model",
            "LESSON_LEDGER_OPENAI_API_KEY": "sk-bench",
            "LESSON_LEDGER_OPENAI_TIMEOUT_SECONDS": "120",
            "LESSON_LEDGER_LOG_LEVEL": "WARNING",
        }
    )
    return env


@contextmanager
def _workers(
    spec: StoreSpec, env: dict[str, str], count: int, args: list[str], folder: Path
) -> Iterator[None]:
    """`count` worker processes, each ready (its claimer started) before the batch."""
    logs = [folder / f"worker-{n}.log" for n in range(count)]
    command = [sys.executable, "-m", "adapters.cli", "worker", "--database-url", spec.ledger_url]
    ready_env = {**env, "LESSON_LEDGER_LOG_LEVEL": "INFO"}  # the start line says ready
    processes = []
    for log in logs:
        with log.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [*command, *args], env=ready_env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while not all("generation claimer started" in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("a worker did not start:\n" + "".join(
                    log.read_text()[-2000:] for log in logs))  # fmt: skip
            time.sleep(0.1)
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _now(spec: StoreSpec) -> float:
    with psycopg.connect(spec.server_url) as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    assert row is not None
    return float(row[0])


def _wait_finished(spec: StoreSpec, lessons: int, started: float, timeout: float) -> float:
    """Seconds from `started` until `lessons` jobs are finished (the database's clock)."""
    table = f'"{spec.schema}".generation_jobs'
    deadline = time.monotonic() + timeout
    with psycopg.connect(spec.server_url, autocommit=True) as conn:
        while True:
            with suppress(psycopg.errors.UndefinedTable):
                row = conn.execute(
                    f"SELECT count(*), extract(epoch FROM max(finished_at)) FROM {table} "
                    "WHERE finished_at IS NOT NULL"
                ).fetchone()
                if row is not None and row[0] >= lessons:
                    return float(row[1]) - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lessons were not generated in {timeout:g} s")
            time.sleep(0.02)


def _outcomes(spec: StoreSpec) -> dict[str, int]:
    with psycopg.connect(spec.server_url) as conn:
        rows = conn.execute(
            f'SELECT outcome, count(*) FROM "{spec.schema}".generation_jobs GROUP BY 1'
        ).fetchall()
    return {str(outcome): int(count) for outcome, count in rows}


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.generation`: this section alone (`make bench` runs it last)."""
    import argparse
    import json
    import platform

    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation")
    parser.add_argument("--database-url", help="PostgreSQL (a fresh schema per run)")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--latencies", default="1,10")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--slow-rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    def step(text: str) -> None:
        print(f"[bench] {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    found = measure(
        args.database_url,
        [float(x) for x in args.latencies.split(",")],
        [int(x) for x in args.workers.split(",")],
        args.concurrency,
        args.rounds,
        args.slow_rounds,
        step,
    )
    found["command"] = " ".join(["python -m benchmarks.generation", *(argv or sys.argv[1:])])
    found["machine"] = (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    found["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print("| measurement | figure | bound | ratio | |")
    print("| --- | --- | --- | --- | --- |")
    for row in table_rows(found):
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
