"""Work started from a page (adapters/http/pages/background.py): its progress while it
runs, its result when done, and an error kept for the page rather than raised."""

from __future__ import annotations

import threading

from adapters.http.pages.background import Run, running, started


def test_a_run_shows_its_progress_then_its_result() -> None:
    halfway, go_on = threading.Event(), threading.Event()

    def work(run: Run[str]) -> str:
        run.done_count = 5
        halfway.set()
        go_on.wait(10)
        run.done_count = 10
        return "intact"

    run = started("test-run", work, total=10)
    assert halfway.wait(10)
    assert running(run) and run.fraction == 0.5 and run.result is None

    go_on.set()
    assert run.done.wait(10)
    assert not running(run)
    assert (run.result, run.error, run.fraction) == ("intact", None, 1.0)
    assert run.finished_at is not None and run.finished_at >= run.started_at


def test_a_failed_run_keeps_its_error_for_the_page() -> None:
    def work(run: Run[str]) -> str:
        raise OSError("the database went away")

    run = started("test-run", work)

    assert run.done.wait(10)
    assert run.result is None and run.error == "OSError: the database went away"
    assert run.fraction == 0.0  # nothing to count: no fraction shown
    assert not running(None)
