"""Projection processes killed with SIGKILL, on SQLite and PostgreSQL.

A catch-up or a rebuild process is killed in the middle of its work (a test-only pause
inside each page's transaction, LESSON_LEDGER_TEST_PAGE_PAUSE, makes the kill land
mid-way and most likely mid-transaction; "mid-way" is detected by polling the stored
position, never by sleeping). What it left is exactly the fold of the events up to its
position, and after a restart the table is identical to a clean rebuild: nothing applied
twice, nothing skipped. Two followers: one writes, the other waits and takes over when
the first is killed.
"""

from __future__ import annotations

import uuid
from uuid import UUID

from adapters.eventstore import event_store
from domain import LessonLedger
from projections.read_model import LessonsReadModel
from projections.status import ProjectionStatus
from projections.view import SHADOW
from tests.support.projections import (
    ProjectionProcess,
    content,
    read_model,
    table_rows,
    wait_until,
    write_requests,
)
from tests.support.stores import Store

PAUSE = 0.02


def varied_log(ledger: LessonLedger) -> None:
    """1,000 lessons requested in batches, then some generated, failed and cancelled, so
    that a lesson's events fall into different pages."""
    provider = str(uuid.uuid4())
    write_requests(ledger, 1000, provider=provider)
    notifications = event_store(ledger).recorder.select_notifications(start=1, limit=2000)
    lesson_ids = list(dict.fromkeys(UUID(str(n.originator_id)) for n in notifications))[:60]
    for index, lesson_id in enumerate(lesson_ids):
        if index % 3 == 0:
            ledger.record_generation(
                lesson_id=lesson_id, attempt=1, content=content("x"), model="template"
            )
        elif index % 3 == 1:
            ledger.record_failure(lesson_id=lesson_id, attempt=1, reason="timeout")
        else:
            ledger.cancel(lesson_id=lesson_id, request_id=f"cancel-{index}", actor="t")


def assert_identical_to_a_clean_rebuild(store: Store, model: LessonsReadModel) -> None:
    assert model.position() == model.head()
    report = model.verify()
    assert report.ok, report.differences[:5]
    rows = table_rows(store)
    model.rebuild(restart=True)
    assert table_rows(store) == rows


def test_a_catch_up_killed_mid_way_then_restarted(store: Store) -> None:
    ledger = store.open()
    varied_log(ledger)
    with read_model(store, ledger) as model:
        head = model.head()
        process = ProjectionProcess(store, "catch-up", "--page-size", "20", pause=PAUSE)
        try:
            wait_until(lambda: model.position() > 0, 60, "the catch-up under way")
            process.kill()
        finally:
            process.close()
        stopped_at = model.position()
        assert 0 < stopped_at < head
        report = model.verify()  # exactly the fold up to where it stopped: no half page
        assert report.ok, report.differences[:5]

        again = ProjectionProcess(store, "catch-up", "--page-size", "300")
        try:
            assert again.finish() == 0, again.seen
        finally:
            again.close()
        assert_identical_to_a_clean_rebuild(store, model)


def test_a_rebuild_killed_mid_way_then_resumed(store: Store) -> None:
    ledger = store.open()
    varied_log(ledger)
    with read_model(store, ledger) as model:
        model.catch_up()
        live, live_position = table_rows(store), model.position()
        process = ProjectionProcess(store, "rebuild", "--page-size", "20", pause=PAUSE)
        try:
            wait_until(lambda: (model.view.position(SHADOW) or 0) > 0, 60, "the rebuild")
            process.kill()
        finally:
            process.close()
        shadow_at = model.view.position(SHADOW)
        assert shadow_at is not None and 0 < shadow_at < model.head()
        assert table_rows(store) == live and model.position() == live_position

        def rebuild_stopped() -> ProjectionStatus | None:
            status = model.status()[0]
            return status if status.rebuild and not status.rebuild.running else None

        status = wait_until(rebuild_stopped, 10, "the killed rebuild's lock to go")
        assert status.rebuild is not None and status.rebuild.position == shadow_at

        write_requests(ledger, 30, prefix="meanwhile")  # the log moves on
        model.catch_up()
        again = ProjectionProcess(store, "rebuild", "--page-size", "300")
        try:
            assert again.finish() == 0, again.seen
        finally:
            again.close()
        assert any(
            f"resuming the interrupted rebuild at position {shadow_at}" in line
            for line in again.seen
        ), again.seen
        assert model.status()[0].rebuild is None
        assert_identical_to_a_clean_rebuild(store, model)


def test_two_followers_one_writes_the_other_takes_over_when_it_is_killed(
    store: Store,
) -> None:
    ledger = store.open()
    write_requests(ledger, 50)
    first = ProjectionProcess(store, "follow")
    second: ProjectionProcess | None = None
    try:
        first.wait_for_line("lessons: active")
        second = ProjectionProcess(store, "follow")
        second.wait_for_line("lessons: waiting")
        with read_model(store, ledger) as model:
            assert model.wait_for(model.head(), timeout=30)
            assert model.status()[0].runner_active
            write_requests(ledger, 20, prefix="while-first")
            assert model.wait_for(model.head(), timeout=30)
            assert not any("lessons: active" in line for line in second.drain())

            first.kill()
            second.wait_for_line("lessons: active")
            write_requests(ledger, 20, prefix="after-kill")
            assert model.wait_for(model.head(), timeout=30)
            assert model.verify().ok
            assert second.stop() == 0
            assert any("lessons: stopped" in line for line in second.seen), second.seen
    finally:
        first.close()
        if second is not None:
            second.close()
