"""The lessons read model on SQLite and PostgreSQL: the table equals the fold of the
events after every kind of command, read-your-writes, catch-up from any position in
pages over notification-id gaps, the query API, verify, status and the CLI's exit codes."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Generator
from datetime import date, timedelta
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError
from typer.testing import CliRunner

from adapters.cli import app
from adapters.eventstore import event_store
from domain import LessonLedger
from projections.lessons import LessonRow
from projections.log import Page
from projections.read_model import MAX_LIMIT, InvalidLessonQuery
from projections.runner import advance
from projections.view import LIVE, SafetyNetFired
from tests.support.projections import (
    MONDAY,
    all_lesson_ids,
    batch_items,
    execute,
    expected_row,
    mixed_workload,
    read_model,
    table_name,
    wait_until,
    write_requests,
)
from tests.support.stores import Store

runner = CliRunner()


def assert_table_equals_fold(
    ledger: LessonLedger, rows: dict[UUID, LessonRow], lesson_ids: set[UUID]
) -> None:
    assert set(rows) == lesson_ids
    for lesson_id in lesson_ids:
        assert rows[lesson_id] == expected_row(ledger, lesson_id), lesson_id


def live_rows(store: Store) -> dict[UUID, LessonRow]:
    with read_model(store) as model:
        found: dict[UUID, LessonRow] = {}
        cursor = None
        while True:
            page = model.list_lessons(limit=MAX_LIMIT, cursor=cursor)
            found.update((row.lesson_id, row) for row in page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


def test_a_live_follower_keeps_the_table_equal_to_the_events(store: Store) -> None:
    """Every command of a mixed workload, with read-your-writes after each one."""
    ledger = store.open()
    with read_model(store, ledger) as model:
        follower = model.start_following(page_size=7)

        def read_your_write(lesson_id: UUID, position: int | None) -> None:
            if position is None:  # replayed: nothing was written
                return
            assert model.wait_for(position, timeout=5.0), f"not at {position} in 5 s"
            assert model.get_lesson(lesson_id) == expected_row(ledger, lesson_id)

        done = mixed_workload(ledger, after_command=read_your_write)
        assert model.wait_for(model.head(), timeout=10.0)
        follower.stop()
        assert follower.last_error is None  # the unique safety net never fired
        assert done.rejections >= 4
        lesson_ids = all_lesson_ids(store)
        assert done.lesson_ids <= lesson_ids
        assert_table_equals_fold(ledger, live_rows(store), lesson_ids)
        report = model.verify()
        assert report.ok, report.differences
        assert report.lessons == report.rows == len(lesson_ids)
        [status] = model.status()
        assert (status.position, status.lag) == (model.head(), 0)


def test_catch_up_from_any_position_over_gaps_in_the_ids(store: Store) -> None:
    """Pages of odd sizes, stopping at arbitrary positions; gaps left by refused inserts."""
    ledger = store.open()
    mixed_workload(ledger)
    if store.kind == "postgresql":
        _make_gaps(ledger)
    write_requests(ledger, 60, prefix="more")
    with read_model(store, ledger) as model:
        head = model.head()
        ids = [
            n.id for n in event_store(ledger).recorder.select_notifications(start=1, limit=10_000)
        ]
        if store.kind == "postgresql":
            assert len(ids) < head, "the log should have gaps in its ids"
        for stop_at in (3, 17, head // 2, head - 1):
            pages: list[Page] = []
            advance(model.view, model.log, LIVE, upto=stop_at, page_size=5, on_page=pages.append)
            assert model.position() <= stop_at
            assert all(len(page.events) <= 5 for page in pages)
            report = model.verify()  # the fold up to the table's position, exactly
            assert report.ok, (stop_at, report.differences)
        result = model.catch_up(page_size=11)
        assert result.position == head and not result.by_other_runner
        assert model.catch_up().events == 0  # nothing twice
        assert_table_equals_fold(ledger, live_rows(store), all_lesson_ids(store))


def _make_gaps(ledger: LessonLedger) -> None:
    """A refused insert consumes notification ids on PostgreSQL: make a few."""
    first = event_store(ledger).recorder.select_notifications(start=1, limit=1)[0]
    for _ in range(3):
        with pytest.raises(IntegrityError):
            event_store(ledger).recorder.insert_events([first])
        write_requests(ledger, 1, prefix=f"gap-{uuid.uuid4().hex[:6]}")


def test_a_page_commits_only_from_the_position_it_was_read_after(store: Store) -> None:
    ledger = store.open()
    write_requests(ledger, 5)
    with read_model(store, ledger) as model:
        [page] = list(model.log.pages(after=0))
        assert model.view.apply_page(LIVE, 0, page)
        assert not model.view.apply_page(LIVE, 0, page)  # moved: nothing written twice
        assert model.position() == page.position
        assert model.verify().ok


def test_wait_for_means_at_least_that_position(store: Store) -> None:
    ledger = store.open()
    with read_model(store, ledger) as model:
        position = write_requests(ledger, 3)
        assert not model.wait_for(position, timeout=0.05)  # nobody follows yet
        model.catch_up()
        assert model.wait_for(position, timeout=0.0)
        assert model.wait_for(position - 1, timeout=0.0)
        assert not model.wait_for(position + 1, timeout=0.05)


def test_listing_filters_pages_and_validates(store: Store) -> None:
    ledger = store.open()
    provider, other = str(uuid.uuid4()), str(uuid.uuid4())
    ledger.request_batch(batch_items(provider, 0, 60, "p"))
    ledger.request_batch(batch_items(other, 0, 10, "o"))
    with read_model(store, ledger) as model:
        model.catch_up()
        week = model.list_lessons(
            provider_id=provider.upper(),
            date_from=MONDAY,
            date_to=(MONDAY + timedelta(days=1)).isoformat(),
            limit=500,
        )
        assert len(week.items) == 48 and week.next_cursor is None
        assert all(r.provider_id == provider for r in week.items)
        keys = [(r.lesson_date, r.time_slot, r.lesson_id) for r in week.items]
        assert keys == sorted(keys)

        pages, cursor = [], None
        while True:
            page = model.list_lessons(provider_id=provider, limit=7, cursor=cursor)
            pages.append(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sum(len(p) for p in pages) == 60 and all(len(p) <= 7 for p in pages)
        assert all(pages), "a page with a next cursor was followed by an empty one"
        assert model.list_lessons(provider_id=provider, limit=60).next_cursor is None
        assert len({r.lesson_id for p in pages for r in p}) == 60

        school = model.list_lessons(school_id="school-1", provider_id=other, limit=500)
        assert {r.school_id for r in school.items} == {"school-1"}
        assert model.list_lessons(status="generated").items == []
        assert len(model.list_lessons(status="requested", limit=500).items) == 70
        row = week.items[0]
        assert model.get_lesson(str(row.lesson_id)) == row
        assert model.get_lesson(uuid.uuid4()) is None
        assert row.as_json()["lesson_date"] == row.lesson_date.isoformat()

        for bad, field in (
            ({"provider_id": "nope"}, "provider_id"),
            ({"school_id": " "}, "school_id"),
            ({"date_from": "2025-02-30"}, "date_from"),
            ({"date_from": "2025-03-05", "date_to": "2025-03-04"}, "date_to"),
            ({"status": "done"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": MAX_LIMIT + 1}, "limit"),
            ({"cursor": "not-a-cursor"}, "cursor"),
        ):
            with pytest.raises(InvalidLessonQuery) as invalid:
                model.list_lessons(**bad)
            assert invalid.value.field == field
        with pytest.raises(InvalidLessonQuery):
            model.get_lesson("123")


def test_a_providers_week_is_read_through_its_index(store: Store) -> None:
    ledger = store.open()
    with read_model(store, ledger):
        pass  # the tables exist
    query = (
        f"SELECT * FROM {table_name(store, 'lessons')} WHERE provider_id = {{p}} "
        f"AND lesson_date >= {{d}} AND lesson_date <= {{d}} "
        "ORDER BY lesson_date, time_slot, lesson_id LIMIT 50"
    )
    if store.kind == "sqlite":
        plan = store.query("EXPLAIN QUERY PLAN " + query.format(p="'x'", d="'2025-03-03'"))
        text = " ".join(str(step[-1]) for step in plan)
        assert "lessons_provider_week_idx" in text and "TEMP B-TREE" not in text, text
    else:
        with store.database.connect() as conn:
            # Rows of 100 providers over a year, straight into the table, for the planner.
            conn.execute(
                f"INSERT INTO {table_name(store, 'lessons')} (lesson_id, provider_id, "
                "school_id, lesson_date, time_slot, status, attempt, version, updated_at) "
                "SELECT gen_random_uuid(), 'p' || (i % 100), 's' || (i % 7), "
                "date '2025-01-01' + (i / 100 % 365), 'slot-' || (i / 36500), 'requested', "
                "1, 2, now() FROM generate_series(1, 20000) AS i"
            )
            conn.execute(f"ANALYZE {table_name(store, 'lessons')}")
            plan = conn.execute(
                "EXPLAIN " + query.format(p="'p7'", d="date '2025-03-03'")
            ).fetchall()
        text = " ".join(str(step[0]) for step in plan)
        assert "lessons_provider_week_idx" in text and "Seq Scan" not in text, text


def test_verify_reports_missing_extra_and_different_rows(store: Store) -> None:
    ledger = store.open()
    write_requests(ledger, 10)
    with read_model(store, ledger) as model:
        model.catch_up()
        rows = sorted(live_rows(store).values(), key=lambda r: r.lesson_id)
        lessons = table_name(store, "lessons")
        execute(store, f"DELETE FROM {lessons} WHERE lesson_id = '{rows[0].lesson_id}'")
        execute(
            store,
            f"UPDATE {lessons} SET status = 'failed', attempt = 7 "
            f"WHERE lesson_id = '{rows[1].lesson_id}'",
        )
        extra = uuid.uuid4()
        execute(
            store,
            f"INSERT INTO {lessons} (lesson_id, provider_id, school_id, lesson_date, "
            "time_slot, status, attempt, version, updated_at) VALUES "
            f"('{extra}', 'p', 's', '2025-01-01', '08:00-09:00', 'requested', 1, 2, "
            "'2025-01-01T00:00:00+00:00')",
        )
        report = model.verify()
        found = {(d.lesson_id, d.kind): d for d in report.differences}
        assert set(found) == {
            (rows[0].lesson_id, "missing"),
            (rows[1].lesson_id, "different"),
            (extra, "extra"),
        }
        assert found[rows[1].lesson_id, "different"].columns == {
            "status": ("requested", "failed"),
            "attempt": (1, 7),
        }
        result = runner.invoke(app, ["projections", "verify", "--database-url", store.url])
        assert result.exit_code == 1, result.output
        assert "missing" in result.output and "extra" in result.output

        model.rebuild()
        assert model.verify().ok
        result = runner.invoke(app, ["projections", "verify", "--database-url", store.url])
        assert result.exit_code == 0, result.output


def test_status_and_the_cli(store: Store) -> None:
    ledger = store.open()
    write_requests(ledger, 4)
    with read_model(store, ledger) as model:
        [before] = model.status()
        assert (before.name, before.position, before.lag) == ("lessons", 0, 4)  # 4 events
        assert before.head == model.head() and not before.runner_active
        assert before.rebuild is None
        verify = ["projections", "verify", "--database-url", store.url]
        behind = runner.invoke(app, verify)
        assert behind.exit_code == 0, behind.output  # what the table holds is right
        assert f"the log goes on to position {before.head}" in behind.output

        result = runner.invoke(app, ["projections", "catch-up", "--database-url", store.url])
        assert result.exit_code == 0, result.output
        assert model.position() == model.head()
        assert "the log goes on" not in runner.invoke(app, verify).output
        result = runner.invoke(
            app, ["projections", "status", "--json", "--database-url", store.url]
        )
        assert result.exit_code == 0, result.output
        assert '"lag": 0' in result.output
        result = runner.invoke(app, ["projections", "rebuild", "--database-url", store.url])
        assert result.exit_code == 0, result.output
        assert model.verify().ok

        follower = model.start_following()
        try:
            wait_until(lambda: model.status()[0].runner_active, 10.0, "an active runner")
        finally:
            follower.stop()
        assert not model.status()[0].runner_active


def test_cli_exit_codes_for_bad_usage_and_unreachable_databases(tmp_path: object) -> None:
    bad_url = runner.invoke(app, ["projections", "status", "--database-url", "mysql://x/y"])
    assert bad_url.exit_code == 2
    missing_folder = runner.invoke(
        app, ["projections", "status", "--database-url", "sqlite:///no/such/folder/x.db"]
    )
    assert missing_folder.exit_code == 2
    unreachable = runner.invoke(
        app, ["projections", "status", "--database-url", "postgresql://postgres@127.0.0.1:1/x"]
    )
    assert unreachable.exit_code == 3
    assert "Traceback" not in unreachable.output
    assert len([line for line in unreachable.output.splitlines() if line.strip()]) == 1
    unknown = runner.invoke(app, ["projections", "sideways"])
    assert unknown.exit_code == 2


def test_dates_and_times_come_back_as_written(store: Store) -> None:
    ledger = store.open()
    result = ledger.request_lesson(
        provider_id=str(uuid.uuid4()),
        school_id="SCH.1",
        lesson_date=date(2025, 12, 31),
        time_slot="23:30-24:00",
        request_id="late",
        actor="t",
    )
    with read_model(store, ledger) as model:
        model.catch_up()
        row = model.get_lesson(result.lesson_id)
        assert row == expected_row(ledger, result.lesson_id)
        assert row is not None and row.requested_at is not None
        assert row.requested_at.utcoffset() == timedelta(0)


def test_a_follower_outlives_the_loss_of_its_database_session(store: Store) -> None:
    """PostgreSQL ends the follower's lock session: it notices, lets go, takes the lock
    again and goes on following; nothing is applied twice."""
    if store.kind != "postgresql":
        pytest.skip("a file lock cannot be taken away from a living process")
    ledger = store.open()
    write_requests(ledger, 5)
    with read_model(store, ledger) as model:
        follower = model.start_following()
        try:
            assert model.wait_for(model.head(), timeout=10)
            key = zlib.crc32(f"{store.database.schema}.lessons".encode()) & 0x7FFF_FFFF
            lock_sessions = store.query(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid::text::bigint = %s",
                (key,),
            )
            assert len(lock_sessions) == 1
            for (pid,) in lock_sessions:
                store.query("SELECT pg_terminate_backend(%s)", (pid,))
            write_requests(ledger, 5, prefix="after-loss")
            assert model.wait_for(model.head(), timeout=20)
            assert follower.last_error is not None and "lost" in follower.last_error
            wait_until(lambda: follower.state == "active", 10, "the follower active again")
        finally:
            follower.stop()
        assert model.verify().ok


def test_the_unique_safety_net_is_there_and_stops_a_page_that_trips_it(store: Store) -> None:
    """The old UNIQUE (provider, school, date, slot) holds on the table; a row that would
    break it (here: planted by hand under another id) stops the page, which writes
    nothing, instead of being skipped or merged."""
    ledger = store.open()
    provider = str(uuid.uuid4())
    result = ledger.request_lesson(
        provider_id=provider,
        school_id="s-1",
        lesson_date="2025-03-03",
        time_slot="08:00-08:30",
        request_id="r-1",
        actor="t",
    )
    with read_model(store, ledger) as model:
        execute(
            store,
            f"INSERT INTO {table_name(store, 'lessons')} (lesson_id, provider_id, "
            "school_id, lesson_date, time_slot, status, attempt, version, updated_at) "
            f"VALUES ('{uuid.uuid4()}', '{provider}', 's-1', '2025-03-03', '08:00-08:30', "
            "'requested', 1, 2, '2025-01-01T00:00:00+00:00')",
        )
        with pytest.raises(SafetyNetFired):
            model.catch_up()
        assert model.position() == 0
        assert model.get_lesson(result.lesson_id) is None
        report = model.verify()
        assert [d.kind for d in report.differences] == ["extra"]  # nothing applied yet
        model.rebuild()  # the rebuilt table has no planted row
        assert model.verify().ok and model.position() == model.head()


def test_a_row_never_goes_back_in_its_lessons_history(store: Store) -> None:
    """The tracked position rewound by hand (as a restored backup of the tracking table
    would): catching up again would apply pages twice, over rows already ahead of them.
    The page is refused instead, and the table keeps what it had."""
    ledger = store.open()
    write_requests(ledger, 30)
    lesson_id = ledger.request_lesson(
        provider_id=str(uuid.uuid4()),
        school_id="s-1",
        lesson_date="2025-03-04",
        time_slot="08:00-08:30",
        request_id="r-1",
        actor="t",
    ).lesson_id
    cancelled = ledger.cancel(lesson_id=lesson_id, request_id="c-1", actor="t").position
    assert cancelled is not None
    with read_model(store, ledger) as model:
        model.catch_up()
        before = live_rows(store)
        assert before[lesson_id].status == "cancelled"
        tracking = table_name(store, "tracking" if store.kind == "sqlite" else "lessons_tracking")
        # Back to before the cancel: a page of an update to a row already past it.
        execute(
            store,
            f"UPDATE {tracking} SET notification_id = {cancelled - 1} "
            f"WHERE application_name = '{LIVE.tracking_name}'",
        )
        with pytest.raises(SafetyNetFired, match="would not move forward"):
            model.catch_up()
        assert model.position() == cancelled - 1
        # Back to the start: pages that open lessons already in the table.
        execute(
            store,
            f"UPDATE {tracking} SET notification_id = 0 "
            f"WHERE application_name = '{LIVE.tracking_name}'",
        )
        with pytest.raises(SafetyNetFired, match="refused a row"):
            model.catch_up()
        assert model.position() == 0
        assert live_rows(store) == before


def test_reading_ahead_stops_with_its_reader_and_skips_nothing(store: Store) -> None:
    """The log reads the next page while the caller applies this one: a caller that
    stops after one page leaves no reader thread behind, and the pages it did not take
    come, whole and in order, to whoever reads on from its position."""
    import threading

    ledger = store.open()
    write_requests(ledger, 450)
    with read_model(store, ledger) as model:
        pages = model.log.pages(after=0, page_size=100)
        assert isinstance(pages, Generator)  # closed below, as a reader that stops early
        first = next(pages)
        pages.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("event-log-read-ahead")]
        rest = list(model.log.pages(after=first.position, page_size=100))
        ids = [e.originator_id for page in [first, *rest] for e in page.events]
        assert [len(page.events) for page in [first, *rest]] == [100, 100, 100, 100, 50]
        assert len(set(ids)) == 450 and rest[-1].position == model.head()
