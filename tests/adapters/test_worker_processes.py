"""`lesson-ledger worker` as real processes: killed with SIGKILL mid-generation and
replaced, two at once on PostgreSQL (one dispatcher, a hot standby that takes over), and
its exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from adapters.eventstore import event_store
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI
from tests.support.generation import (
    API_KEY,
    IEP_GOAL,
    STUDENT_IDS,
    all_decided,
    key,
    request_lessons,
    results,
    start_worker_process,
    statuses,
    tracked_position,
    wait_for,
    worker_env,
)
from tests.support.stores import Store

DEADLINE = 60.0


def test_a_killed_worker_is_replaced_and_every_lesson_is_generated_once(
    store: Store, tmp_path: Path
) -> None:
    ledger = store.open()
    ids = request_lessons(ledger, 12)
    with FakeOpenAI(default=fake_openai.ok(delay=0.6)) as fake:
        env = worker_env(fake.base_url)
        first = start_worker_process(store.url, env, tmp_path / "first.log", "--concurrency", "4")
        try:
            wait_for(
                lambda: (
                    statuses(ledger, ids).count("generated") >= 2
                    and len(fake.in_flight_keys()) >= 2
                ),
                DEADLINE,
                "some lessons generated and others in flight",
            )
        finally:
            first.kill()  # SIGKILL: no cleanup, no goodbye
            first.wait(10)
        # Still in flight at the fake after the worker died: their answers were never
        # written, so the dead worker cannot have recorded them.
        lost = fake.in_flight_keys()
        assert lost, "nothing was in flight when the worker was killed"
        second = start_worker_process(store.url, env, tmp_path / "second.log", "--concurrency", "4")
        try:
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
            head = event_store(ledger).recorder.max_notification_id()
            wait_for(lambda: tracked_position(store) >= head, DEADLINE, "the position at the head")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        calls = fake.calls_by_attempt()

    assert statuses(ledger, ids) == ["generated"] * 12
    for lesson_id in ids:
        assert results(ledger, lesson_id) == Counter({("LessonGenerated", 1): 1}), lesson_id
    assert all(calls[k] >= 2 for k in lost)  # in flight when it died: generated again
    assert set(calls) == {key(i) for i in ids}
    assert max(calls.values()) == 2
    assert sum(1 for n in calls.values() if n == 2) <= 4  # at most what was in flight
    _assert_logs_keep_secrets(tmp_path / "first.log", tmp_path / "second.log")


def test_two_worker_processes_generate_each_attempt_once(
    postgres_store: Store, tmp_path: Path
) -> None:
    store = postgres_store
    ledger = store.open()
    ids = request_lessons(ledger, 16)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with FakeOpenAI(default=fake_openai.ok(delay=0.15)) as fake:
        env = worker_env(fake.base_url)
        workers = [start_worker_process(store.url, env, log, "--concurrency", "3") for log in logs]
        try:
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
            assert fake.calls_by_attempt() == Counter({key(i): 1 for i in ids})
            assert fake.peak_in_flight <= 3  # one dispatcher at a time, 3 threads
            active = [n for n, log in enumerate(logs) if _states(log).count("active")]
            assert len(active) == 1, [_states(log) for log in logs]
            standby = 1 - active[0]
            assert "waiting" in _states(logs[standby])

            # The active one dies; the standby takes over.
            workers[active[0]].kill()
            workers[active[0]].wait(10)
            more = request_lessons(ledger, 4, prefix="more", first_slot=16)
            wait_for(all_decided(ledger, more), DEADLINE, "the standby generated the rest")
            assert "active" in _states(logs[standby])
        finally:
            for process in workers:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    assert process.wait(20) == 0
        calls = fake.calls_by_attempt()

    assert calls == Counter({key(i): 1 for i in ids + more})
    for lesson_id in ids + more:
        assert results(ledger, lesson_id) == Counter({("LessonGenerated", 1): 1}), lesson_id
    _assert_logs_keep_secrets(*logs)


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--database-url", "mysql://x/y"], {}, 2, "unknown scheme 'mysql'"),
        (
            ["--database-url", "postgresql://postgres@127.0.0.1:1/test"],
            {},
            3,
            "cannot reach PostgreSQL",
        ),
        (["--generator", "gpt"], {}, 2, "--generator must be template or openai"),
        (["--concurrency", "0"], {"COLUMNS": "200"}, 2, "Invalid value for '--concurrency'"),
        (["--generator", "openai"], {}, 2, "LESSON_LEDGER_OPENAI_API_KEY"),
        ([], {"LESSON_LEDGER_OPENAI_MAX_TRIES": "many"}, 2, "openai_max_tries"),
    ],
)
def test_worker_command_errors_are_one_line_and_an_exit_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    database = ["--database-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    clean = worker_env("http://127.0.0.1:9/v1", **env)
    for name in (
        "LESSON_LEDGER_GENERATOR",
        "LESSON_LEDGER_OPENAI_BASE_URL",
        "LESSON_LEDGER_OPENAI_API_KEY",
    ):
        clean.pop(name)
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "worker", *database, *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def _states(log: Path) -> list[str]:
    """The worker states a process logged, in order."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "lesson_ledger.worker" and "state" in entry:
                found.append(entry["state"])
    return found


def _assert_logs_keep_secrets(*logs: Path) -> None:
    text = "".join(log.read_text() for log in logs)
    assert "lesson generated" in text
    for secret in (*STUDENT_IDS, IEP_GOAL, API_KEY, "Fractions on a number line"):
        assert secret not in text
    assert "Traceback" not in text
