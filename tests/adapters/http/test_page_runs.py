"""Work started from a page (adapters/http/pages/background.py), kept in the database
(adapters/storage/page_runs.py), on SQLite and PostgreSQL: another server process (here,
another store on the same database) sees its progress, then its result; one run of a
name at a time across processes; an error is kept for the page rather than raised; a run
whose process ended shows as interrupted and may be started again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.http.pages.background import Count, start_run
from adapters.storage.page_runs import STALE_SECONDS, PageRun, PageRuns
from adapters.storage.sqlstore import SqlStore
from domain import LessonLedger
from tests.support.http import PROVIDER, csrf, lesson, sign_in
from tests.support.projections import wait_until
from tests.support.served import Api, served
from tests.support.stores import Store


@pytest.fixture
def processes(store: Store, ledger: LessonLedger) -> Iterator[tuple[PageRuns, PageRuns]]:
    """The page runs as two server processes see them: two stores, one database (its
    schema made by the ledger, as a server's start makes it)."""
    here, there = SqlStore(store.database), SqlStore(store.database)
    try:
        yield PageRuns(here), PageRuns(there)
    finally:
        here.close()
        there.close()


def latest(runs: PageRuns, name: str = "verify") -> PageRun:
    found = runs.latest(name)
    assert found is not None
    return found


def test_another_process_sees_a_run_progress_then_its_result(
    processes: tuple[PageRuns, PageRuns],
) -> None:
    here, there = processes
    halfway, go_on = threading.Event(), threading.Event()

    def work(count: Count) -> int:
        count(5)
        halfway.set()
        go_on.wait(30)
        count(10)
        return 10

    assert there.latest("verify") is None
    assert start_run(here, "verify", work, lambda found: {"ok": True, "rows": found}, total=10)
    assert halfway.wait(10)
    wait_until(lambda: latest(there).done_count == 5, 10, "the progress, seen elsewhere")
    seen = latest(there)
    assert seen.running and seen.fraction == 0.5 and seen.result is None
    # One at a time: neither process starts another while it runs.
    assert not start_run(there, "verify", work, lambda found: {}, total=10)
    assert not start_run(here, "verify", work, lambda found: {}, total=10)

    go_on.set()
    wait_until(lambda: not latest(there).running, 10, "the run to end, seen elsewhere")
    done = latest(there)
    assert (done.result, done.error, done.fraction) == ({"ok": True, "rows": 10}, None, 1.0)
    assert done.finished_at is not None and done.finished_at >= done.started_at


def test_a_failed_run_keeps_its_error_for_the_page(processes: tuple[PageRuns, PageRuns]) -> None:
    here, there = processes

    def work(count: Count) -> int:
        raise OSError("the database went away\nand more")

    assert start_run(here, "verify", work, lambda found: {})
    wait_until(lambda: not latest(there).running, 10, "the failed run to end")
    failed = latest(there)
    assert failed.result is None and failed.error == "OSError: the database went away"
    assert failed.fraction == 0.0  # nothing to count: no fraction shown
    # Another may start once it has ended.
    assert start_run(there, "verify", lambda count: 1, lambda found: {"ok": True})
    wait_until(lambda: latest(here).result == {"ok": True}, 10, "the next run's result")


def test_a_run_whose_process_ended_shows_interrupted_and_may_start_again(
    store: Store, processes: tuple[PageRuns, PageRuns]
) -> None:
    here, there = processes
    run_id = here.start("verify", 100)  # begun, and then its process was killed
    assert run_id is not None
    here.beat("verify", run_id, 40)
    assert latest(there).running and not start_run(there, "verify", lambda count: 1, lambda _: {})

    long_ago = (datetime.now(UTC) - timedelta(seconds=STALE_SECONDS + 1)).isoformat()
    store.execute(f"UPDATE {here.table} SET beat_at = %s", (long_ago,))

    stopped = latest(there)
    assert stopped.interrupted and not stopped.running and stopped.done_count == 40
    assert start_run(there, "verify", lambda count: 1, lambda found: {"ok": True})
    wait_until(lambda: latest(here).result == {"ok": True}, 10, "the run started again")


def press_verify(api: Api, page: str) -> None:
    """An admin's press of the page's verify button."""
    shown = api.client.get(page)
    pressed = api.client.post(f"{page}/verify", data={"csrf_token": csrf(shown.text)})
    assert pressed.status_code == 303, pressed.text


def test_a_verify_started_on_one_server_process_shows_on_another(store: Store) -> None:
    # As `serve --workers N` runs them: request processes, one of them keeping the
    # projections current.
    with served(store.url) as one, served(store.url, follow_projections=False) as other:
        created = one.client.post(
            "/v1/lessons/requests", json=lesson(providerId=PROVIDER), headers=one.auth("admin")
        )
        assert created.status_code == 201, created.text
        for api in (one, other):
            sign_in(api.client, one.tokens["admin:None"])

        assert "No verify started yet" in other.client.get("/proof").text
        press_verify(one, "/proof")
        wait_until(
            lambda: "✓ Intact" in other.client.get("/proof").text,
            30,
            "the log's verify, started by one process, to show intact on the other",
        )
        press_verify(other, "/operations")
        wait_until(
            lambda: "✓ Verified at position" in one.client.get("/operations").text,
            30,
            "the read model's verify, started by the other, to show on the first",
        )
        # One lesson, one row: counted in the singular.
        assert ": 1 lesson, 1 row, no difference" in one.client.get("/operations").text
