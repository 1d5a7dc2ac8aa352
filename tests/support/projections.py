"""Helpers for the read model's tests: workloads, waiting with deadlines, projection
processes, and reading the tables as an operator would."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest

from adapters.read_model import open_read_model
from domain import LessonLedger
from domain.errors import DomainRejection
from projections.lessons import LessonRow, row_from_state
from projections.read_model import LessonsReadModel
from projections.view import PAGE_PAUSE_SETTING
from tests.support import ROOT
from tests.support.stores import Store

T = TypeVar("T")
MONDAY = date(2025, 3, 3)


def wait_until(condition: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds.
    (None is never returned, so it is no part of the result's type.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)


def details(students: int = 1) -> dict[str, Any]:
    return {
        "students": [{"id": f"s{i}", "grade": 3} for i in range(students)],
        "subject": "reading",
        "subjectType": "ela",
    }


def content(title: str) -> dict[str, Any]:
    return {
        "lesson": {"title": title, "duration": 30, "objectives": ["read"]},
        "worksheet": {"items": [1, 2.5, None, "x"]},
        "metadata": {"model": "template"},
    }


def slot(index: int) -> str:
    start = 7 * 60 + 30 * (index % 24)
    return f"{start // 60:02d}:{start % 60:02d}-{(start + 30) // 60:02d}:{(start + 30) % 60:02d}"


def batch_items(provider: str, start: int, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` requests for distinct slots of one provider, from index `start`."""
    return [
        {
            "provider_id": provider,
            "school_id": f"school-{(start + i) % 3}",
            "lesson_date": (MONDAY + timedelta(days=(start + i) // 24 % 300)).isoformat(),
            "time_slot": slot(start + i),
            "request_id": f"{prefix}-{start + i}",
            "actor": "tester",
            "details": details(),
        }
        for i in range(count)
    ]


def write_requests(
    ledger: LessonLedger, count: int, provider: str | None = None, prefix: str = "bulk"
) -> int:
    """`count` new lessons (one event each) in batches of 500; returns the last position."""
    provider = provider or str(uuid.uuid4())
    position = 0
    for start in range(0, count, 500):
        result = ledger.request_batch(batch_items(provider, start, min(500, count - start), prefix))
        assert result.summary["accepted"] == min(500, count - start), result.summary
        position = max(position, *(item.position or 0 for item in result.items))
    return position


@dataclass
class Workload:
    """What a mixed workload did: every lesson id it touched and the positions it got."""

    lesson_ids: set[UUID] = field(default_factory=set)
    positions: list[int] = field(default_factory=list)
    rejections: int = 0


def mixed_workload(
    ledger: LessonLedger, after_command: Callable[[UUID, int | None], None] | None = None
) -> Workload:
    """Every command, with conflicts, replays, stale results, regenerations, failures,
    cancellations, batches (partial and atomic), on-demand lessons and a slot cancelled
    and then requested again. `after_command(lesson_id, position)` runs after each."""
    done = Workload()
    provider, other = str(uuid.uuid4()), str(uuid.uuid4())

    def run(command: Callable[..., Any], **arguments: Any) -> Any:
        try:
            result = command(**arguments)
        except DomainRejection:
            done.rejections += 1
            return None
        done.lesson_ids.add(result.lesson_id)
        if result.position is not None:
            done.positions.append(result.position)
        if after_command is not None:
            after_command(result.lesson_id, result.position)
        return result

    def request(request_id: str, day: int, index: int, who: str = provider, **extra: Any) -> Any:
        return run(
            ledger.request_lesson,
            provider_id=who,
            school_id="school-a",
            lesson_date=(MONDAY + timedelta(days=day)).isoformat(),
            time_slot=extra.pop("time_slot", slot(index)),
            request_id=request_id,
            actor=extra.pop("actor", "teacher"),
            details=details(2),
            **extra,
        )

    a = request("a-1", 0, 0)
    request("a-2", 0, 0, actor="someone-else")  # conflict: recorded as a rejection
    request("a-1", 0, 0)  # replayed: nothing written
    run(
        ledger.record_generation,
        lesson_id=a.lesson_id,
        attempt=1,
        content=content("A1"),
        model="template",
    )
    run(
        ledger.record_generation,
        lesson_id=a.lesson_id,
        attempt=1,
        content=content("A1"),
        model="template",
    )  # replayed
    run(ledger.regenerate, lesson_id=a.lesson_id, request_id="a-3", actor="teacher")
    run(
        ledger.record_generation,
        lesson_id=a.lesson_id,
        attempt=1,
        content=content("old"),
        model="template",
    )  # stale: recorded as a rejection
    run(ledger.record_failure, lesson_id=a.lesson_id, attempt=2, reason="generator timed out")
    run(ledger.regenerate, lesson_id=a.lesson_id, request_id="a-4", actor="teacher")
    run(
        ledger.record_generation,
        lesson_id=a.lesson_id,
        attempt=3,
        content=content("A3"),
        model="gpt-x",
    )

    b = request("b-1", 1, 1)
    run(ledger.cancel, lesson_id=b.lesson_id, request_id="b-2", actor="teacher", reason="sick")
    run(
        ledger.record_generation,
        lesson_id=b.lesson_id,
        attempt=1,
        content=content("late"),
        model="template",
    )  # after the cancel: stale
    request("b-3", 1, 1, actor="substitute")  # the cancelled slot, requested again
    run(
        ledger.record_generation,
        lesson_id=b.lesson_id,
        attempt=2,
        content=content("B2"),
        model="template",
    )

    c = request("c-1", 2, 2, who=other)
    run(ledger.record_failure, lesson_id=c.lesson_id, attempt=1, reason="bad prompt")
    run(ledger.cancel, lesson_id=c.lesson_id, request_id="c-2", actor="teacher")
    run(ledger.cancel, lesson_id=c.lesson_id, request_id="c-3", actor="teacher")  # conflict

    for rid in ("od-1", "od-2"):  # on-demand: two on one provider, school and date
        request(rid, 3, 0, kind="on_demand", time_slot=None)

    items = batch_items(provider, 100, 8, "batch-p")
    items.append(dict(items[0], request_id="batch-dup"))  # duplicate_in_batch
    items.append(
        {
            **items[1],
            "request_id": "batch-conflict",
            "school_id": "school-a",
            "lesson_date": MONDAY.isoformat(),
            "time_slot": slot(0),
        }
    )  # slot A: conflict
    items.append({**items[2], "time_slot": "structured"})  # invalid
    partial = ledger.request_batch(items, mode="partial", batch_id="batch-1")
    atomic = ledger.request_batch(batch_items(other, 200, 5, "batch-a"), mode="atomic")
    refused = ledger.request_batch(
        [
            *batch_items(other, 300, 3, "batch-x"),
            {
                **batch_items(other, 0, 1, "batch-y")[0],
                "lesson_date": MONDAY.isoformat(),
                "time_slot": slot(0),
                "provider_id": provider,
                "school_id": "school-a",
            },
        ],
        mode="atomic",
    )
    assert not refused.written
    imported = ledger.import_lessons(
        [
            {
                "id": "legacy-1",
                "provider_id": provider,
                "school_id": "school-a",
                "lesson_date": "2025-04-01",
                "time_slot": "08:00-08:30",
                "content": content("legacy"),
                "created_at": "2024-12-01T09:00:00+02:00",
                "updated_at": "2024-12-02T10:00:00",
            },
            {
                "id": "legacy-2",
                "provider_id": provider,
                "school_id": "school-a",
                "lesson_date": "2025-04-01",
                "time_slot": "09:00",
            },  # start only, no content
            {
                "id": "legacy-3",
                "provider_id": provider,
                "school_id": "school-a",
                "lesson_date": MONDAY.isoformat(),
                "time_slot": slot(0),
            },  # collides with A
        ],
        batch_id="import-1",
    )
    assert [i.outcome for i in imported.items] == ["accepted", "accepted", "conflict"]
    for result in (partial, atomic, imported):
        for item in result.items:
            if item.lesson_id is not None and item.outcome != "invalid":
                done.lesson_ids.add(item.lesson_id)
            if item.position is not None:
                done.positions.append(item.position)
                if after_command is not None and item.lesson_id is not None:
                    after_command(item.lesson_id, item.position)
    legacy = imported.items[1].lesson_id
    assert legacy is not None
    run(
        ledger.record_generation,
        lesson_id=legacy,
        attempt=1,
        content=content("L2"),
        model="template",
    )
    first = next(i for i in partial.items if i.outcome == "accepted")
    assert first.lesson_id is not None
    run(ledger.record_failure, lesson_id=first.lesson_id, attempt=1, reason="quota")
    run(ledger.cancel, lesson_id=first.lesson_id, request_id="batch-cancel", actor="teacher")
    assert {i.outcome for i in partial.items} >= {
        "accepted",
        "duplicate_in_batch",
        "conflict",
        "invalid",
    }
    return done


def expected_row(ledger: LessonLedger, lesson_id: UUID) -> LessonRow:
    """The row the slot's events make, as the table keeps it (its content sealed)."""
    slot = ledger.slots.load(lesson_id)
    assert slot is not None
    return row_from_state(slot.state())


def all_lesson_ids(store: Store) -> set[UUID]:
    """Every lesson id the event store holds, read directly."""
    rows = store.query(f"SELECT DISTINCT originator_id FROM {store.database.events_table}")
    return {UUID(str(row[0])) for row in rows}


def table_rows(store: Store, table: str = "lessons") -> list[tuple[Any, ...]]:
    """The table's rows as the database holds them, ordered by lesson id."""
    name = table if store.kind == "sqlite" else f'"{store.database.schema}".{table}'
    return store.query(f"SELECT * FROM {name} ORDER BY lesson_id")


def execute(store: Store, statement: str) -> None:
    """Change the database directly (Store.query only reads)."""
    if store.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(store.database.path) as conn:
            conn.execute(statement)
        return
    with store.database.connect() as conn:
        conn.execute(statement)


def table_name(store: Store, table: str) -> str:
    return table if store.kind == "sqlite" else f'"{store.database.schema}".{table}'


@contextmanager
def read_model(store: Store, ledger: LessonLedger | None = None) -> Iterator[LessonsReadModel]:
    model = open_read_model(store.url, ledger=ledger)
    try:
        yield model
    finally:
        model.close()


class ProjectionProcess:
    """`python -m adapters.cli projections ...` in a process of its own, its stderr read
    line by line in a thread so tests can wait for a line with a deadline."""

    def __init__(self, store: Store, *args: str, pause: float | None = None) -> None:
        env = dict(os.environ)
        env.pop(PAGE_PAUSE_SETTING, None)
        if pause is not None:
            env[PAGE_PAUSE_SETTING] = str(pause)
        env["COLUMNS"] = "200"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.cli",
                "projections",
                *args,
                "--database-url",
                store.url,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        """The first stderr line (not seen before) that contains `needle`."""
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if needle in line:
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"no line with {needle!r} from pid {self.pid} in {timeout} s; "
                    f"seen: {self.seen[-10:]}"
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit on its own; its exit code."""
        code = self.process.wait(timeout)
        self._reader.join(5)
        self.drain()
        return code

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        return self.finish(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
