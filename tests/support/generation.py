"""What the worker tests share: lessons to request, waiting on conditions with deadlines,
counting the results the ledger recorded per attempt, and worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from adapters.generators.settings import GeneratorSettings
from adapters.keys.keyfile import KEY_FILE_SETTING
from adapters.worker import RunningWorker, WorkerSettings, start_worker_in_background
from domain import CommandResult, LessonLedger
from tests.support import ROOT

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"
API_KEY = "sk-test-do-not-log-0123456789"
STUDENT_IDS = ("student-zq81-private", "student-kx52-private")
"""Distinctive ids that must never reach a prompt, a header or a log line."""
IEP_GOAL = "will decode CVC words with 80% accuracy"


def details(topic: str = "fractions", duration: int = 30) -> dict[str, Any]:
    return {
        "students": [
            {"id": STUDENT_IDS[0], "grade": 3, "readingLevel": "J", "iepGoals": [IEP_GOAL]},
            {"id": STUDENT_IDS[1], "grade": 4, "accommodations": ["extended time"]},
        ],
        "subject": "Math",
        "subjectType": "math",
        "teacherRole": "resource",
        "topic": topic,
        "duration": duration,
    }


def request_lessons(
    ledger: LessonLedger, count: int, *, prefix: str = "req", first_slot: int = 0
) -> list[UUID]:
    """`count` lessons, one per 15-minute slot of one day from slot number `first_slot`
    (06:00 is 0): their ids, in request order."""
    return [
        result.lesson_id
        for result in request_lessons_at(ledger, count, prefix=prefix, first_slot=first_slot)
    ]


def request_lessons_at(
    ledger: LessonLedger, count: int, *, prefix: str = "req", first_slot: int = 0
) -> list[CommandResult]:
    """As `request_lessons`, with each request's result (its `position` is the
    OpenedByRequest event's notification id: the new slot's one event)."""
    results = []
    for n in range(count):
        start, end = 6 * 60 + 15 * (first_slot + n), 6 * 60 + 15 * (first_slot + n + 1)
        slot = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
        result = ledger.request_lesson(
            provider_id=PROVIDER,
            school_id="school-1",
            lesson_date="2025-09-05",
            time_slot=slot,
            request_id=f"{prefix}-{n}",
            actor="teacher",
            details=details(topic=f"topic {n}"),
        )
        results.append(result)
    return results


def key(lesson_id: UUID, attempt: int = 1) -> str:
    """The attempt as the worker names it to the generator."""
    return f"{lesson_id}/{attempt}"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `condition()` holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def results(ledger: LessonLedger, lesson_id: UUID) -> Counter[tuple[str, int]]:
    """How many LessonGenerated / GenerationFailed events each attempt of the lesson has."""
    return Counter(
        (entry.event, entry.changes["attempt"])
        for entry in ledger.history(lesson_id).entries
        if entry.event in ("LessonGenerated", "GenerationFailed")
    )


def statuses(ledger: LessonLedger, ids: list[UUID]) -> list[str]:
    states = [ledger.get_lesson(lesson_id) for lesson_id in ids]
    return [state.status if state else "missing" for state in states]


def all_decided(ledger: LessonLedger, ids: list[UUID]) -> Callable[[], bool]:
    return lambda: all(s in ("generated", "failed") for s in statuses(ledger, ids))


def openai_settings(base_url: str, **overrides: Any) -> WorkerSettings:
    """Settings for the openai generator against the fake: quick retries, short timeouts."""
    values: dict[str, Any] = {
        "generator": "openai",
        "openai_base_url": base_url,
        "openai_model": "fake-model",
        "openai_api_key": API_KEY,
        "openai_timeout_seconds": 5.0,
        "openai_max_tries": 3,
        "worker_concurrency": 4,
        "worker_lease_seconds": 3.0,
        "worker_claim_poll_seconds": 0.2,
        "worker_poll_seconds": 0.05,
        "worker_stop_grace_seconds": 10.0,
        **overrides,
    }
    return WorkerSettings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_worker(
    url: str, settings: GeneratorSettings | WorkerSettings, ledger: LessonLedger | None = None
) -> Iterator[RunningWorker]:
    """A worker in a background thread of the test process; stopped afterwards."""
    assert isinstance(settings, WorkerSettings)
    worker = start_worker_in_background(url, settings, ledger=ledger)
    try:
        yield worker
    finally:
        assert worker.stop(timeout=20), "the worker did not stop"


def tracked_position(store: Any) -> int:
    """The worker's stored position, read as an operator would."""
    if store.kind == "sqlite":
        rows = store.query(
            "SELECT notification_id FROM tracking WHERE application_name = ?",
            ("generation_worker",),
        )
    else:
        rows = store.query(
            f'SELECT notification_id FROM "{store.database.schema}".generation_worker_tracking '
            "WHERE application_name = %s",
            ("generation_worker",),
        )
    return int(rows[0][0]) if rows else 0


def worker_env(base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process using the fake as its openai generator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LESSON_LEDGER_")}
    env[KEY_FILE_SETTING] = os.environ[KEY_FILE_SETTING]  # the keys the test's ledger has
    env.update(
        {
            "LESSON_LEDGER_GENERATOR": "openai",
            "LESSON_LEDGER_OPENAI_BASE_URL": base_url,
            "LESSON_LEDGER_OPENAI_MODEL": "fake-model",
            "LESSON_LEDGER_OPENAI_API_KEY": API_KEY,
            "LESSON_LEDGER_OPENAI_MAX_TRIES": "3",
            "LESSON_LEDGER_WORKER_POLL_SECONDS": "0.05",
            "LESSON_LEDGER_WORKER_LEASE_SECONDS": "3",
            "LESSON_LEDGER_WORKER_CLAIM_POLL_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@contextmanager
def worker_processes(
    url: str, env: dict[str, str], logs: list[Path], *args: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A worker process per log. On leaving, each one the test has not reaped (killed and
    waited for) is stopped with SIGTERM, and must exit 0; one the test adds to the list
    is stopped too."""
    workers = [start_worker_process(url, env, log, *args) for log in logs]
    try:
        yield workers
    finally:
        running = [process for process in workers if process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            assert process.wait(30) == 0


def start_worker_process(
    url: str, env: dict[str, str], log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    """`python -m adapters.cli worker` with its stderr (JSON logs) in `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "worker", "--database-url", url, *args],
            stdout=log,
            stderr=log,
            env=env,
            cwd=ROOT,
        )
