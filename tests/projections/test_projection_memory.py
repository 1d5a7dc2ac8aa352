"""Catch-up and rebuild stream the log a page at a time: their memory does not grow with
the log, on SQLite and PostgreSQL.

A process's peak RSS is measured after a catch-up and a rebuild over a log of N lessons
and over one of 4N. The lessons carry large requests (30 students with long IEP goals,
about 90 kB an event), so that size, not the count of events, makes the log big: had a
process held the log whole, its peak would have grown by at least the bytes of the 3N
extra lessons; streaming, it grows by a fraction of that. Batches are small because the
library's PostgreSQL insert (pipeline mode) was seen to hang on multi-megabyte saves.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

from domain import LessonLedger
from tests.support import ROOT
from tests.support.projections import execute, read_model, slot, table_name
from tests.support.stores import Store

LESSONS = 100  # N
PER_BATCH = 10
PAGE_SIZE = "20"
MEASURE = """
import resource, sys
from adapters.read_model import open_read_model
model = open_read_model(sys.argv[1])
result = model.catch_up(page_size=int(sys.argv[2]))
catch_up = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.rebuild(restart=True, page_size=int(sys.argv[2]))
rebuild = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.close()
print(result.events, catch_up, rebuild)
"""


def big_requests(provider: str, start: int, count: int) -> list[dict[str, Any]]:
    goal = "Decode multisyllable words with common suffixes. " * 20  # about 1 kB
    students = [
        {"id": f"s{i}", "grade": 4, "iepGoals": [f"{goal} ({j})" for j in range(3)]}
        for i in range(30)
    ]
    return [
        {
            "provider_id": provider,
            "school_id": "school-m",
            "lesson_date": f"2025-{1 + (start + i) // 24 % 12:02d}-{1 + (start + i) % 28:02d}",
            "time_slot": slot(start + i),
            "request_id": f"m-{start + i}",
            "actor": "t",
            "details": {"students": students, "subject": "reading"},
        }
        for i in range(count)
    ]


def write_big(ledger: LessonLedger, provider: str, start: int, count: int) -> None:
    for first in range(start, start + count, PER_BATCH):
        result = ledger.request_batch(big_requests(provider, first, PER_BATCH))
        assert result.summary["accepted"] == PER_BATCH, result.summary


def peak_kib(store: Store) -> tuple[int, int, int]:
    """(events caught up, peak RSS after the catch-up, after the rebuild), in a process
    that starts from an empty table."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, store.url, PAGE_SIZE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    events, catch_up, rebuild = (int(part) for part in done.stdout.split())
    return events, catch_up, rebuild


def log_bytes(store: Store) -> int:
    size = "length(state)" if store.kind == "sqlite" else "octet_length(state)"
    return int(store.query(f"SELECT sum({size}) FROM {store.database.events_table}")[0][0])


def forget_the_table(store: Store) -> None:
    """Back to an empty table at position 0, so the next catch-up reads the whole log."""
    tracking = "tracking" if store.kind == "sqlite" else table_name(store, "lessons_tracking")
    execute(store, f"DELETE FROM {table_name(store, 'lessons')}")
    execute(store, f"UPDATE {tracking} SET notification_id = 0 WHERE application_name = 'lessons'")


def test_catch_up_and_rebuild_memory_does_not_grow_with_the_log(store: Store) -> None:
    ledger = store.open()
    provider = str(uuid.uuid4())
    with read_model(store, ledger):
        pass  # the tables exist
    write_big(ledger, provider, 0, LESSONS)
    small_bytes = log_bytes(store)
    events, small_catch_up, small_rebuild = peak_kib(store)
    assert events == LESSONS  # one event per new lesson (OpenedByRequest)

    write_big(ledger, provider, LESSONS, 3 * LESSONS)
    extra_kib = (log_bytes(store) - small_bytes) // 1024
    assert extra_kib > 20_000  # the 3N extra lessons are over 20 MB of events
    forget_the_table(store)
    events, big_catch_up, big_rebuild = peak_kib(store)
    assert events == 4 * LESSONS

    # Holding the log whole would add at least `extra_kib`; a page at a time, nothing
    # that grows with it (allow a third of it for allocator noise).
    assert big_catch_up - small_catch_up < extra_kib / 3, (small_catch_up, big_catch_up)
    assert big_rebuild - small_rebuild < extra_kib / 3, (small_rebuild, big_rebuild)
    with read_model(store, ledger) as model:
        assert model.verify().ok
