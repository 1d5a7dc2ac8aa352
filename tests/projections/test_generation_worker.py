"""The generation worker in the test process (start_worker_in_background), on SQLite and
PostgreSQL, against the fake OpenAI-compatible server: every attempt ends generated or
failed exactly once, retries as scripted, N at once, restarts, regenerate and cancel."""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import adapters.worker as worker_module
from adapters.eventstore import event_store
from adapters.worker import WorkerSettings, open_worker
from domain import LedgerUnavailable, LessonLedger
from projections.generation.port import GeneratedLesson
from projections.generation.window import Window
from projections.view import Wakeup
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI
from tests.support.generation import (
    API_KEY,
    IEP_GOAL,
    PROVIDER,
    STUDENT_IDS,
    all_decided,
    key,
    openai_settings,
    request_lessons,
    request_lessons_at,
    results,
    running_worker,
    statuses,
    tracked_position,
    wait_for,
)
from tests.support.stores import Store

DEADLINE = 30.0


def test_every_attempt_ends_generated_or_failed_once_as_scripted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ledger = store.open()
    ids = request_lessons(ledger, 9)
    scripts: list[tuple[list[fake_openai.Reply], int, str | None]] = [
        ([fake_openai.ok(delay=0.1)], 1, None),
        ([fake_openai.error(429), fake_openai.error(500), fake_openai.ok()], 3, None),
        ([fake_openai.malformed(), fake_openai.ok()], 2, None),
        ([fake_openai.hang(0.8), fake_openai.ok()], 2, None),
        ([fake_openai.error(500)] * 3, 3, "openai: HTTP 500 (scripted_error) (after 3 tries)"),
        ([fake_openai.error(429, retry_after=0)] * 3, 3, "openai: HTTP 429"),
        (
            [fake_openai.malformed(), fake_openai.invalid_lesson(), fake_openai.malformed()],
            3,
            "the content is not JSON",
        ),
        ([fake_openai.hang(0.8)] * 3, 3, "timed out"),
        ([fake_openai.error(400)], 1, "HTTP 400 (scripted_error) (not retried)"),
    ]
    with FakeOpenAI() as fake:
        for lesson_id, (replies, _, _) in zip(ids, scripts, strict=True):
            fake.script(key(lesson_id), *replies)
        settings = openai_settings(fake.base_url, openai_timeout_seconds=0.3)
        with running_worker(store.url, settings, ledger) as worker:
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson decided")
            head = event_store(ledger).recorder.max_notification_id()
            assert head is not None
            wait_for(lambda: tracked_position(store) >= head, DEADLINE, "the position at the head")

    for lesson_id, (_, calls, reason) in zip(ids, scripts, strict=True):
        state = ledger.get_lesson(lesson_id)
        assert state is not None
        expected = ("LessonGenerated", 1) if reason is None else ("GenerationFailed", 1)
        assert results(ledger, lesson_id) == Counter({expected: 1}), lesson_id
        assert fake.calls_for(key(lesson_id)) == calls, lesson_id
        if reason is None:
            assert state.status == "generated" and state.model == "fake-model"
            GeneratedLesson.model_validate(state.content)
        else:
            assert state.status == "failed"
            assert reason in (state.failure_reason or ""), state.failure_reason
    assert worker.counts == Counter({"generated": 4, "failed": 5})
    assert all(sid not in call.raw for call in fake.calls for sid in STUDENT_IDS)
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "lesson generated" in logged and "generation failed" in logged
    for secret in (*STUDENT_IDS, IEP_GOAL, API_KEY, "Fractions on a number line"):
        assert secret not in logged


def test_the_template_generator_is_the_default(store: Store) -> None:
    ledger = store.open()
    ids = request_lessons(ledger, 3)
    settings = WorkerSettings(_env_file=None, generator="template", worker_poll_seconds=0.05)  # type: ignore[call-arg]
    with running_worker(store.url, settings, ledger):
        wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
    for lesson_id in ids:
        state = ledger.get_lesson(lesson_id)
        assert state is not None and state.status == "generated"
        assert state.model == "template-v1"
        lesson = GeneratedLesson.model_validate(state.content)
        assert lesson.lesson.duration == 30 and "grades 3-4" in lesson.lesson.title
        assert all(sid not in json.dumps(state.content) for sid in STUDENT_IDS)


def test_a_request_without_details_fails_with_a_reason(store: Store) -> None:
    ledger = store.open()
    bare = ledger.request_lesson(
        provider_id=PROVIDER,
        school_id="school-1",
        lesson_date="2025-09-05",
        time_slot="08:00-08:30",
        request_id="bare-1",
        actor="teacher",
    )
    settings = WorkerSettings(_env_file=None, worker_poll_seconds=0.05)  # type: ignore[call-arg]
    with running_worker(store.url, settings, ledger):
        wait_for(all_decided(ledger, [bare.lesson_id]), DEADLINE, "the bare lesson decided")
    state = ledger.get_lesson(bare.lesson_id)
    assert state is not None and state.status == "failed"
    assert "no details" in (state.failure_reason or "")


def test_up_to_n_attempts_are_generated_at_once(store: Store) -> None:
    ledger = store.open()
    ids = request_lessons(ledger, 8)
    with FakeOpenAI() as fake:
        # Each call waits until 3 calls are in flight: the worker must hold 3 at once.
        fake.hold_until_in_flight(3)
        with running_worker(
            store.url, openai_settings(fake.base_url, worker_concurrency=3), ledger
        ):
            wait_for(lambda: len(fake.calls) >= 3, DEADLINE, "3 calls at once")
            fake.hold_until_in_flight(None)
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
    assert fake.peak_in_flight == 3
    assert statuses(ledger, ids) == ["generated"] * 8


def test_more_concurrency_keeps_more_calls_in_flight(tmp_path: Path) -> None:
    """The generator is the slow part (0.2 s a call): with a concurrency of 4 the worker
    has 4 calls in flight at once, with 1 never more than 1, and every lesson is
    generated either way. (How fast that is goes to `make bench`: a wall-clock ratio
    here failed at random on a loaded machine.)"""
    for concurrency in (1, 4):
        store = Store("sqlite", f"sqlite:///{tmp_path}/throughput-{concurrency}.db")
        ledger = store.open()
        ids = request_lessons(ledger, 8)
        with FakeOpenAI(default=fake_openai.ok(delay=0.2)) as fake:
            settings = openai_settings(fake.base_url, worker_concurrency=concurrency)
            with running_worker(store.url, settings, ledger):
                wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
        assert fake.peak_in_flight == concurrency
        assert statuses(ledger, ids) == ["generated"] * 8
        store.close()


def test_a_restarted_worker_neither_skips_nor_repeats_finished_attempts(store: Store) -> None:
    ledger = store.open()
    first = request_lessons(ledger, 4, prefix="first")
    with FakeOpenAI() as fake:
        settings = openai_settings(fake.base_url)
        with running_worker(store.url, settings, ledger):
            wait_for(all_decided(ledger, first), DEADLINE, "the first lessons")
            head = event_store(ledger).recorder.max_notification_id()
            assert head is not None
            wait_for(lambda: tracked_position(store) >= head, DEADLINE, "the position at the head")
        with running_worker(store.url, settings, ledger) as again:
            wait_for(
                lambda: again.worker.position == event_store(ledger).recorder.max_notification_id(),
                DEADLINE,
                "the restarted worker caught up",
            )
            assert len(fake.calls) == 4  # nothing finished was generated again
            later = request_lessons(ledger, 2, prefix="later", first_slot=4)
            again.wake()
            wait_for(all_decided(ledger, later), DEADLINE, "the later lessons")
    assert fake.calls_by_attempt() == Counter({key(i): 1 for i in first + later})
    for lesson_id in first + later:
        assert results(ledger, lesson_id) == Counter({("LessonGenerated", 1): 1})


def test_the_position_only_moves_past_finished_attempts(tmp_path: Path) -> None:
    """SQLite's single dispatcher: its position is the lowest finished request."""
    store = Store("sqlite", f"sqlite:///{tmp_path / 'position.db'}")
    ledger = store.open()
    requested = request_lessons_at(ledger, 5)
    slow, rest = requested[0], requested[1:]
    release = threading.Event()
    with FakeOpenAI() as fake:
        fake.script(key(slow.lesson_id), fake_openai.held(release))
        with running_worker(store.url, openai_settings(fake.base_url), ledger):
            wait_for(all_decided(ledger, [r.lesson_id for r in rest]), DEADLINE, "the others")
            assert statuses(ledger, [slow.lesson_id]) == ["requested"]
            assert slow.position is not None
            assert tracked_position(store) < slow.position  # the first is still in flight
            release.set()
            wait_for(all_decided(ledger, [slow.lesson_id]), DEADLINE, "the slow lesson")
            head = event_store(ledger).recorder.max_notification_id()
            assert head is not None
            wait_for(lambda: tracked_position(store) >= head, DEADLINE, "the position at the head")
    store.close()


def test_the_feeders_position_never_passes_an_attempt_without_a_job(
    postgres_store: Store,
) -> None:
    """PostgreSQL: the position moves past a request only once its job is committed. The
    job table refuses inserts for a while (a trigger): the feeder fails and retries, its
    position stays, nothing is generated; then the jobs go in and everything follows."""
    store = postgres_store
    ledger = store.open()
    requested = request_lessons_at(ledger, 3)
    table = f'"{store.database.schema}".generation_jobs'
    with FakeOpenAI() as fake:
        worker = open_worker(store.url, openai_settings(fake.base_url), ledger=ledger)
        try:
            refuse = f'"{store.database.schema}".refuse_jobs'
            _execute(
                store,
                f"CREATE FUNCTION {refuse}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no jobs today'; END $$",
            )
            _execute(
                store,
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {refuse}()",
            )
            worker.start()
            wait_for(lambda: worker.worker.last_error is not None, DEADLINE, "the refused insert")
            assert "no jobs today" in (worker.worker.last_error or "")
            assert tracked_position(store) == 0
            assert store.query(f"SELECT count(*) FROM {table}") == [(0,)]
            _execute(store, f"DROP TRIGGER refuse ON {table}")
            ids = [r.lesson_id for r in requested]
            wait_for(all_decided(ledger, ids), DEADLINE, "every lesson generated")
            head = event_store(ledger).recorder.max_notification_id()
            assert head is not None
            wait_for(lambda: tracked_position(store) >= head, DEADLINE, "the position at the head")
        finally:
            assert worker.stop(timeout=20)
    rows = store.query(f"SELECT notification_id, outcome, claims FROM {table} ORDER BY 1")
    assert rows == [(r.position, "generated", 1) for r in requested]
    assert fake.calls_by_attempt() == Counter({key(r.lesson_id): 1 for r in requested})


def test_a_result_that_arrives_after_a_regeneration_is_stale(store: Store) -> None:
    ledger = store.open()
    [lesson_id] = request_lessons(ledger, 1)
    release = threading.Event()
    with FakeOpenAI() as fake:
        fake.script(key(lesson_id, 1), fake_openai.held(release))
        with running_worker(store.url, openai_settings(fake.base_url), ledger) as worker:
            fake.wait_until(
                lambda f: key(lesson_id, 1) in f.in_flight_keys(), DEADLINE, "attempt 1 in flight"
            )
            # Meanwhile attempt 1 is decided elsewhere (an operator) and regenerated.
            ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="gave up", actor="ops")
            ledger.regenerate(lesson_id=lesson_id, request_id="regen-1", actor="teacher")
            wait_for(lambda: fake.calls_for(key(lesson_id, 2)) == 1, DEADLINE, "attempt 2 asked")
            release.set()  # attempt 1's result comes back now: stale
            wait_for(lambda: worker.counts["stale"] == 1, DEADLINE, "the stale result")
            wait_for(all_decided(ledger, [lesson_id]), DEADLINE, "attempt 2 generated")
    state = ledger.get_lesson(lesson_id)
    assert state is not None and (state.status, state.attempt) == ("generated", 2)
    assert results(ledger, lesson_id) == Counter(
        {("GenerationFailed", 1): 1, ("LessonGenerated", 2): 1}
    )
    entries = ledger.history(lesson_id).entries
    assert [e.changes["reason"] for e in entries if e.event == "RequestRejected"] == ["stale"]
    assert fake.calls_by_attempt() == Counter({key(lesson_id, 1): 1, key(lesson_id, 2): 1})


def test_a_second_result_for_an_attempt_is_a_replay_never_a_second_lesson(store: Store) -> None:
    """As when a worker died after asking and its successor asked again: both answers
    come back; the first recorded wins, the other is replayed (nothing written)."""
    ledger = store.open()
    [lesson_id] = request_lessons(ledger, 1)
    release = threading.Event()
    with FakeOpenAI() as fake:
        fake.script(key(lesson_id), fake_openai.held(release))
        with running_worker(store.url, openai_settings(fake.base_url), ledger) as worker:
            fake.wait_until(
                lambda f: key(lesson_id) in f.in_flight_keys(), DEADLINE, "attempt 1 in flight"
            )
            earlier = ledger.record_generation(
                lesson_id=lesson_id,
                attempt=1,
                content={"lesson": "from the other worker"},
                model="other",
                actor="other-worker",
            )
            release.set()
            wait_for(lambda: worker.counts["replayed"] == 1, DEADLINE, "the replay")
    assert earlier.outcome == "accepted"
    assert results(ledger, lesson_id) == Counter({("LessonGenerated", 1): 1})
    state = ledger.get_lesson(lesson_id)
    assert state is not None and state.model == "other"


def test_a_superseded_attempt_is_not_generated(store: Store) -> None:
    ledger = store.open()
    [lesson_id] = request_lessons(ledger, 1)
    ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="gave up", actor="ops")
    ledger.regenerate(lesson_id=lesson_id, request_id="regen-1", actor="teacher")
    with (
        FakeOpenAI() as fake,
        running_worker(store.url, openai_settings(fake.base_url), ledger) as worker,
    ):
        wait_for(all_decided(ledger, [lesson_id]), DEADLINE, "attempt 2 generated")
    assert fake.calls_by_attempt() == Counter({key(lesson_id, 2): 1})
    assert results(ledger, lesson_id)[("LessonGenerated", 2)] == 1
    assert worker.counts == Counter({"skipped": 1, "generated": 1})


def test_a_cancelled_lesson_is_not_generated(store: Store) -> None:
    ledger = store.open()
    cancelled, kept, in_flight = request_lessons(ledger, 3)
    ledger.cancel(lesson_id=cancelled, request_id="cancel-1", actor="teacher")
    release = threading.Event()
    with FakeOpenAI() as fake:
        fake.script(key(in_flight), fake_openai.held(release))
        with running_worker(store.url, openai_settings(fake.base_url), ledger) as worker:
            fake.wait_until(
                lambda f: key(in_flight) in f.in_flight_keys(),
                DEADLINE,
                "the third lesson in flight",
            )
            ledger.cancel(lesson_id=in_flight, request_id="cancel-2", actor="teacher")
            release.set()
            wait_for(all_decided(ledger, [kept]), DEADLINE, "the kept lesson generated")
            wait_for(lambda: worker.counts["stale"] == 1, DEADLINE, "the stale result")
            # Requested again after the cancel: a new attempt, generated.
            again = _request_again(ledger, cancelled)
            worker.wake()
            wait_for(all_decided(ledger, [cancelled]), DEADLINE, "the new attempt generated")
    assert again == 2
    assert key(cancelled, 1) not in fake.calls_by_attempt()
    assert results(ledger, cancelled) == Counter({("LessonGenerated", 2): 1})
    assert results(ledger, in_flight) == Counter()
    assert statuses(ledger, [in_flight]) == ["cancelled"]
    assert worker.counts == Counter({"skipped": 1, "generated": 2, "stale": 1})


def _execute(store: Store, statement: str) -> None:
    with store.database.connect() as conn:
        conn.execute(statement.encode())


def _request_again(ledger: LessonLedger, lesson_id: object) -> int:
    state = ledger.get_lesson(lesson_id)  # type: ignore[arg-type]
    assert state is not None
    result = ledger.request_lesson(
        provider_id=state.provider_id,
        school_id=state.school_id,
        lesson_date=state.lesson_date.isoformat(),
        time_slot=state.time_slot,
        request_id="again-1",
        actor="teacher",
        details={"students": [{"id": STUDENT_IDS[0], "grade": 2}], "subject": "Reading"},
    )
    return result.attempt


def test_the_window_is_the_lowest_contiguous_finished_position() -> None:
    window = Window(10)
    assert window.position == 10
    window.read(12)  # no requests among 11-12
    assert window.position == 12
    for notification_id in (14, 17, 20):
        window.started(notification_id)
    window.read(25)
    assert window.position == 13
    window.finished(17)
    window.finished(20)
    assert window.position == 13  # 14 is still in flight
    window.finished(14)
    assert window.position == 25


def test_a_worker_that_loses_its_lock_lets_go_and_takes_over_again(postgres_store: Store) -> None:
    """The advisory lock's session is cut (as by a database restart or a network fault):
    the worker stops handing out, lets its threads finish, and becomes active again."""
    store = postgres_store
    ledger = store.open()
    first = request_lessons(ledger, 2, prefix="first")
    name = f"{store.database.schema}.generation_worker"
    keys = (0x4C4C, zlib.crc32(name.encode()) & 0x7FFF_FFFF)  # as adapters/view_locks.py
    with (
        FakeOpenAI() as fake,
        running_worker(store.url, openai_settings(fake.base_url), ledger) as worker,
    ):
        wait_for(all_decided(ledger, first), DEADLINE, "the first lessons")
        [(pid,)] = store.query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = %s AND objsubid = 2 AND granted",
            keys,
        )
        store.query("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: worker.worker.state == "error", DEADLINE, "the lost lock noticed")
        later = request_lessons(ledger, 2, prefix="later", first_slot=2)
        wait_for(all_decided(ledger, later), DEADLINE, "the later lessons")
        assert worker.worker.state == "active"
    assert fake.calls_by_attempt() == Counter({key(i): 1 for i in first + later})
    assert "LockLost" in (worker.worker.last_error or "")


class RefusedOnce(Wakeup):
    """A LISTEN whose first session the database refuses (as PostgreSQL does with "too
    many clients"), then the real one."""

    def __init__(self, real: Wakeup) -> None:
        self.real = real
        self.refused = 0

    def open(self) -> None:
        if not self.refused:
            self.refused += 1
            raise LedgerUnavailable("cannot reach PostgreSQL: too many clients already")
        self.real.open()

    def wait(self, timeout: float) -> None:
        self.real.wait(timeout)

    def wake(self) -> None:
        self.real.wake()

    def close(self) -> None:
        self.real.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_claimer_whose_first_listen_is_refused_goes_on(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs' LISTEN refused at start (once, in CI, by a server out of connections):
    the claimer's listener does not die with a traceback; it listens on its next wait,
    and the lessons are generated."""
    made: list[RefusedOnce] = []

    def refused_once(*args: Any) -> Wakeup:
        made.append(RefusedOnce(real_jobs_wakeup(*args)))
        return made[-1]

    real_jobs_wakeup = worker_module._jobs_wakeup
    monkeypatch.setattr(worker_module, "_jobs_wakeup", refused_once)
    ledger = postgres_store.open()
    ids = request_lessons(ledger, 3)
    settings = openai_settings("http://unused", generator="template")
    with running_worker(postgres_store.url, settings, ledger):
        wait_for(all_decided(ledger, ids), DEADLINE, "the lessons generated")

    assert [wakeup.refused for wakeup in made] == [1]
