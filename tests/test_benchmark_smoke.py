"""`python -m benchmarks.run` with tiny sizes: it runs end to end on both stores, writes
every figure as a number, and leaves nothing behind. No timing is asserted."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.keys.data_key import DataKey
from adapters.keys.data_keys import DataKeys
from benchmarks import sealing, writes
from benchmarks.stores import create_store, drop_store
from benchmarks.workload import requests
from domain import lesson_id_for
from tests.support import ROOT
from tests.support.stores import POSTGRES_URL, require_postgres

KEYS = (
    "single_ratio",
    "concurrent_ratio",
    "batch_ratio",
    "sealing_single_drop",
    "sealing_single_uncached_drop",
    "sealing_threads_drop",
    "sealing_batch_drop",
    "sealing_generation_drop",
    "catchup_events_per_s",
    "rebuild_s",
    "rebuild_peak_rss_mb",
    "history_p99_ms",
    "week_query_p99_ms",
    "merkle_build_events_per_s",
    "merkle_proof_p99_ms",
    "merkle_consistency_p99_ms",
    "upcasting_catchup_ratio",
    "upcasting_rebuild_ratio",
)
TINY = (
    "--requests", "50", "--events", "2000", "--clients", "2", "--rounds", "1",
    "--race-slots", "10", "--queries", "50",
)  # fmt: skip


def _bench_schemas() -> set[str]:
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def _run(tmp_path: Path, *options: str) -> dict[str, object]:
    out = tmp_path / "bench.json"
    ran = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *TINY, *options, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "| measurement |" in ran.stdout
    figures: dict[str, object] = json.loads(out.read_text())
    for key in KEYS:
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value), (key, value)
    assert figures["race_ledger_outcomes"] == {"accepted": 10, "conflict": 10}
    assert figures["single_ledger_outcomes"] == {"accepted": 50}
    # Sealing's cost: every side's requests accepted (inserted): 2 x 50 single (the same
    # two students, and two students of its own each), 4 x 50 from two threads, 10 x 50
    # batched; and 50 generated lessons recorded.
    sizes = (
        ("single", 100), ("single_uncached", 100), ("threads", 200), ("batch", 500),
        ("generation", 50),
    )  # fmt: skip
    for name, count in sizes:
        assert figures[f"sealing_{name}_outcomes"] == {
            "baseline": {"inserted": count}, "plain": {"accepted": count},
            "sealed": {"accepted": count},
        }  # fmt: skip
    return figures


@pytest.mark.postgres
def test_the_benchmark_runs_on_postgresql(tmp_path: Path) -> None:
    require_postgres()
    figures = _run(
        tmp_path, "--store", "postgresql", "--database-url", POSTGRES_URL, "--api-workers", "1,2",
        "--api-rounds", "1", "--generation-workers", "1,2", "--generation-latencies", "0.2",
        "--generation-concurrency", "2", "--generation-rounds", "1",
    )  # fmt: skip
    assert figures["store"] == "postgresql"
    # Students met for the first time, their keys in the process's directory; students
    # new to the ledger, their keys made.
    for name in ("single_known", "single_new"):
        assert math.isfinite(figures[f"sealing_{name}_drop"])  # type: ignore[arg-type]
        assert figures[f"sealing_{name}_outcomes"] == {
            "baseline": {"inserted": 100}, "plain": {"accepted": 100},
            "sealed": {"accepted": 100},
        }  # fmt: skip
    # HTTP, the ledger and the plain endpoint, 1 and 2 server processes each: every
    # request (50 timed, one warm-up per client) accepted, and the ratio of each size.
    for side in ("ledger", "plain"):
        rates = figures[f"api_{side}_requests_per_s"]
        assert isinstance(rates, dict) and set(rates) == {"1", "2"}
        assert all(isinstance(rate, float) and rate > 0 for rate in rates.values()), rates
        assert figures[f"api_{side}_outcomes"] == {"1": {"201": 52}, "2": {"201": 52}}
    ratios = figures["http_ratios"]
    assert isinstance(ratios, dict) and set(ratios) == {"1", "2"}
    assert figures["http_ratio"] == ratios["1"] > 0
    # Generation: 1 and 2 worker processes, then a calendar week at the defaults; every
    # lesson generated.
    generated = figures["generation_lessons_per_s"]
    assert isinstance(generated, dict) and set(generated) == {"1", "2"}
    assert all(rate["0.2s"] > 0 for rate in generated.values()), generated
    assert figures["generation_outcomes"] == {
        "1x0.2s": {"generated": 2}, "2x0.2s": {"generated": 4}, "1x0.2s-week": {"generated": 40},
    }  # fmt: skip
    assert figures["generation_calendar_week_s"]["0.2s"] > 0  # type: ignore[index]
    # Its schemas (the main one, sealing's cost, the oldest version's log, one per
    # generation run) were dropped; other runs' may be there, from tests running beside it.
    made = figures["schemas"]
    assert isinstance(made, list) and len(made) == 6, made
    assert not set(made) & _bench_schemas()


def test_the_benchmark_runs_on_sqlite(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    figures = _run(tmp_path, "--store", "sqlite", "--database-url", str(folder))
    assert figures["store"] == "sqlite"
    # No erasures heard of, so no directory: new students' keys are looked up first.
    assert "sealing_single_known_drop" not in figures
    assert "sealing_single_new_drop" not in figures
    assert not any(folder.iterdir())  # its files were deleted


def test_the_ledger_without_sealing_keeps_parts_plain_and_prints_unkeyed(tmp_path: Path) -> None:
    """The side that sealing's cost is measured against writes what the ledger wrote
    before sealing; the other side seals."""
    spec = create_store("sqlite", str(tmp_path))
    plain, sealed = sealing._ledger(spec, sealed=False), sealing._ledger(spec, sealed=True)
    try:
        first, second = requests("plain-or-sealed", 0, 2)
        for ledger, request in ((plain, first), (sealed, second)):
            ledger.request_lesson(**request.as_ledger_item())
        events = {
            name: ledger.slots.events(lesson_id_for(
                request.provider_id, request.school_id, request.lesson_date,
                request.time_slot,
            ))[0]
            for name, ledger, request in (("plain", plain, first), ("sealed", sealed, second))
        }  # fmt: skip
    finally:
        plain.close()
        sealed.close()
    assert events["plain"].students == [{"plain": s} for s in _students()]
    assert events["plain"].fingerprint.startswith("2:")
    assert all(set(part) == {"keys", "sealed"} for part in events["sealed"].students)
    assert events["sealed"].fingerprint.startswith("4:")


def test_the_generation_measurement_records_each_lesson_sealed_on_one_side_only(
    tmp_path: Path,
) -> None:
    """Each side's lessons are requested first; the timed turns read each one and record
    its generated lesson, whose content the sealed side seals and the other keeps plain."""
    spec = create_store("sqlite", str(tmp_path))
    rates = sealing.generation(spec, 6, 2)
    assert {side: dict(rate.outcomes) for side, rate in rates.items()} == {
        "baseline": {"inserted": 6}, "plain": {"accepted": 6}, "sealed": {"accepted": 6},
    }  # fmt: skip
    ledger = sealing._ledger(spec, sealed=True)
    try:
        for side in ("plain", "sealed"):
            for request in requests(f"sealing-generation-{side}", 0, 6):
                events = ledger.slots.events(request.lesson_id)
                assert [type(event).__name__ for event in events] == [
                    "OpenedByRequest", "LessonGenerated",
                ], side  # fmt: skip
                content = events[-1].content
                assert set(content) == ({"plain"} if side == "plain" else {"keys", "key", "sealed"})
                assert ledger.get_lesson(events[-1].originator_id).content["lesson"]["title"]
    finally:
        ledger.close()


def _students() -> list[dict[str, object]]:
    from domain.commands import validate_request

    request = requests("students", 0, 1)[0].as_ledger_item()
    return validate_request(**request).students or []


@pytest.mark.postgres
def test_the_cost_breakdown_runs() -> None:
    """`python -m benchmarks.costs`: a row for every step, then for the loop's."""
    require_postgres()
    ran = subprocess.run(
        [sys.executable, "-m", "benchmarks.costs", "--requests", "20",
         "--database-url", POSTGRES_URL],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    rows = (
        "| validate the request", "| seal the students' parts", "| plain INSERT, whole",
        "| **request_lesson, whole**", "| seal + decide (the event) |", "| whole |",
        "| 48 random bytes, os.urandom (lets go of the GIL) |", "| a student id's HMAC",
        "| SHA-256 of 3,000 bytes in pieces", "| AES-GCM seal of 3,000 bytes",
    )  # fmt: skip
    for row in rows:
        assert row in ran.stdout, (row, ran.stdout)


def test_the_uncached_measurement_looks_up_two_students_keys_a_request(
    tmp_path: Path,
) -> None:
    """Its sealed side names two students of its own a request, whose keys were made
    before its rounds (none is made during them) and are looked up by each request."""
    spec = create_store("sqlite", str(tmp_path))
    looked_up: list[int] = []
    stored = DataKeys._stored

    def counted(keys: DataKeys, owners: Sequence[str]) -> dict[str, DataKey]:
        looked_up.append(sum(owner.startswith("student:") for owner in owners))
        return stored(keys, owners)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DataKeys, "_stored", counted)
        rates = sealing.single_uncached(spec, 6, 2)
    assert {side: dict(rate.outcomes) for side, rate in rates.items()} == {
        "baseline": {"inserted": 6}, "plain": {"accepted": 6}, "sealed": {"accepted": 6},
    }  # fmt: skip
    with sqlite3.connect(spec.sqlite_path) as conn:
        owners = conn.execute("SELECT owner FROM data_keys WHERE owner LIKE 'student:%'")
        assert len(owners.fetchall()) == 2 + 2 * 6  # the workload's two, and 2 a request
    # The last six look-ups are the timed requests': each its two students.
    assert looked_up[-6:] == [2] * 6


@pytest.mark.postgres
def test_the_new_students_measurement_makes_two_keys_a_request_without_looking_up(
    tmp_path: Path,
) -> None:
    """Its sealed side names two students new to the ledger a request, in a process whose
    directory holds every key: each request makes their two keys, which its append
    stores (decision record 0064); it looks none up, nor stores them on their own."""
    require_postgres()
    spec = create_store("postgresql", POSTGRES_URL)
    calls: list[tuple[str, int]] = []  # (what, how many students' keys)
    made, created, stored = DataKeys._made, DataKeys._created, DataKeys._stored

    def counted(name: str, call: Any) -> Any:
        def counting(keys: DataKeys, owners: Sequence[str]) -> Any:
            students = sum(owner.startswith("student:") for owner in owners)
            if students:
                calls.append((name, students))
            return call(keys, owners)

        return counting

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(DataKeys, "_made", counted("made", made))
            patch.setattr(DataKeys, "_created", counted("stored on their own", created))
            patch.setattr(DataKeys, "_stored", counted("looked up", stored))
            rates = sealing.single_new(spec, 6, 2)
    finally:
        drop_store(spec)
    assert {side: dict(rate.outcomes) for side, rate in rates.items()} == {
        "baseline": {"inserted": 6}, "plain": {"accepted": 6}, "sealed": {"accepted": 6},
    }  # fmt: skip
    # The timed requests' (the warm-up's before them may look up, its directory not read).
    assert calls[-6:] == [("made", 2)] * 6


def test_the_write_sides_take_short_turns_each_led_by_the_next_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single requests and batches alternate in turns (50 requests; five batches), each
    turn led by the side that went second in the last, on the same requests."""
    spec = create_store("sqlite", str(tmp_path))
    sent: list[tuple[str, int]] = []
    for name, side in (
        ("_ledger_single", "ledger"), ("_baseline_single", "baseline"),
        ("_ledger_batches", "ledger"), ("_baseline_batches", "baseline"),
    ):  # fmt: skip
        real = getattr(writes, name)

        def recording(
            client: Any, work: Any, *size: int, side: str = side, real: Any = real
        ) -> Any:
            sent.append((side, len(work)))
            return real(client, work, *size)

        monkeypatch.setattr(writes, name, recording)

    single = writes.single(spec, 150, 1)
    assert sent[2:] == [
        ("baseline", 50), ("ledger", 50), ("ledger", 50), ("baseline", 50),
        ("baseline", 50), ("ledger", 50),
    ]  # fmt: skip
    sent.clear()
    batched = writes.batches(spec, 1000, 100, 1)
    assert sent[2:] == [("baseline", 500), ("ledger", 500), ("ledger", 500), ("baseline", 500)]
    for rates, count in ((single, 150), (batched, 1000)):
        assert rates["ledger"].outcomes == {"accepted": count}
        assert rates["baseline"].outcomes == {"inserted": count}
