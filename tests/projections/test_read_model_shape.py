"""A release whose read model has another shape (its fold or its columns changed) rebuilds
the table on its first start, in a shadow table, and swaps it in: rows of the old shape are
never served, and never mixed with rows of the new one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from projections import lessons
from projections.lessons import LessonRow
from projections.runner import advance
from projections.view import LIVE, ShapeOutdated
from tests.support.projections import mixed_workload, read_model, wait_until, write_requests
from tests.support.stores import Store

ORIGINAL_FOLD = lessons.fold


def refolded(row: LessonRow | None, event: Any) -> LessonRow:
    """The next release's fold: the same, with a model name of its own (a visible change)."""
    folded = ORIGINAL_FOLD(row, event)
    if folded.model is None or folded.model.endswith("@2"):
        return folded
    return replace(folded, model=f"{folded.model}@2")


@pytest.fixture
def next_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as the next release: shape 2, with its own fold."""
    monkeypatch.setattr(lessons, "SHAPE", 2)
    monkeypatch.setattr(lessons, "fold", refolded)


def test_a_new_table_starts_in_this_releases_shape(store: Store) -> None:
    ledger = store.open()
    with read_model(store, ledger) as model:
        assert model.view.shape(LIVE) == lessons.SHAPE == 1


def test_an_older_shape_is_rebuilt_by_the_first_follower_and_never_served(
    store: Store, request: pytest.FixtureRequest
) -> None:
    ledger = store.open()
    workload = mixed_workload(ledger)
    with read_model(store, ledger) as model:
        model.catch_up()
        generated = [r for r in model.list_lessons(limit=500).items if r.model]
        assert generated, "the workload generates lessons"
    request.getfixturevalue("next_release")

    with read_model(store, ledger) as model:
        with pytest.raises(ShapeOutdated, match="shape 1; this release writes shape 2"):
            model.get_lesson(generated[0].lesson_id)
        write_requests(ledger, 3, prefix="meanwhile")
        with pytest.raises(ShapeOutdated):  # nothing of the new shape goes into the old table
            advance(model.view, model.log, LIVE)

        follower = model.start_following()
        try:
            wait_until(lambda: model.view.shape(LIVE) == 2, 60, "the upgrade's swap")
            wait_until(lambda: model.position() >= model.head(), 30, "the follower caught up")
        finally:
            follower.stop()
        rows = {r.lesson_id: r for r in model.list_lessons(limit=500).items}

    assert {r.lesson_id for r in generated} <= set(rows)
    assert workload.lesson_ids <= set(rows)
    assert all(rows[r.lesson_id].model == f"{r.model}@2" for r in generated)


def test_reads_are_refused_until_the_swap_commits(
    store: Store, request: pytest.FixtureRequest
) -> None:
    ledger = store.open()
    write_requests(ledger, 20)
    with read_model(store, ledger) as model:
        model.catch_up()
        lesson_id = model.list_lessons(limit=1).items[0].lesson_id
    request.getfixturevalue("next_release")
    refused_during_swap: list[bool] = []

    with read_model(store, ledger) as upgrading, read_model(store, ledger) as reader:

        def before_swap_commits() -> None:
            try:
                reader.get_lesson(lesson_id)
            except ShapeOutdated:
                refused_during_swap.append(True)

        upgrading.rebuild(before_swap_commit=before_swap_commits)
        assert upgrading.view.shape(LIVE) == 2
        assert reader.get_lesson(lesson_id) is not None  # after the swap: the new shape

    assert refused_during_swap == [True]
