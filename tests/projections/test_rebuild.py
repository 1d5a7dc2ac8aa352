"""Rebuilding the lessons table without downtime, on SQLite and PostgreSQL: reads keep
succeeding (and seeing rows) while the shadow fills and while it is swapped in, the live
follower keeps following, the position never goes back; an interrupted rebuild leaves
the live table alone and is resumed or restarted; one rebuild at a time."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from projections.read_model import LessonsReadModel
from projections.runner import RunnerBusy
from projections.view import SHADOW, Target
from tests.support.projections import (
    MONDAY,
    batch_items,
    read_model,
    table_rows,
    wait_until,
    write_requests,
)
from tests.support.stores import Store


class Reader(threading.Thread):
    """Reads a provider's week and one lesson in a loop, as the HTTP API would."""

    def __init__(self, model: LessonsReadModel, provider: str) -> None:
        super().__init__(daemon=True)
        self.model = model
        self.provider = provider
        self.stop = threading.Event()
        self.reads = 0
        self.empty = 0
        self.errors: list[BaseException] = []
        self.went_back = 0

    def run(self) -> None:
        last_position = 0
        while not self.stop.is_set():
            try:
                page = self.model.list_lessons(
                    provider_id=self.provider,
                    date_from=MONDAY,
                    date_to=MONDAY + timedelta(days=6),
                    limit=50,
                )
                if not page.items or self.model.get_lesson(page.items[0].lesson_id) is None:
                    self.empty += 1
                position = self.model.position()
                self.went_back += position < last_position
                last_position = position
            except BaseException as error:  # every failure counts, none may happen
                self.errors.append(error)
            self.reads += 1


class Writer(threading.Thread):
    """Keeps recording new lessons while the rebuild runs."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.ledger = store.open()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        provider = str(uuid.uuid4())
        count = 0
        while not self.stop.is_set():
            try:
                result = self.ledger.request_batch(batch_items(provider, count * 5, 5, "w"))
                assert result.summary["accepted"] == 5, result.summary
            except BaseException as error:
                self.errors.append(error)
                return
            count += 1


def test_reads_keep_succeeding_while_a_rebuild_runs_and_swaps(store: Store) -> None:
    ledger = store.open()
    provider = str(uuid.uuid4())
    write_requests(ledger, 1000, provider=provider)
    with read_model(store, ledger) as model:
        follower = model.start_following()
        assert model.wait_for(model.head(), timeout=30)
        reader, writer = Reader(model, provider), Writer(store)
        reader.start()
        writer.start()
        overlapped = False

        def during_the_swap() -> None:
            nonlocal overlapped
            before = reader.reads
            if store.kind == "postgresql":
                # The swap holds the table: a reader queues behind it, then reads the new one.
                wait_until(lambda: readers_waiting(store) > 0, 10, "a reader queued")
            else:
                # Readers are not blocked at all: they go on reading their snapshot.
                wait_until(lambda: reader.reads >= before + 3, 10, "reads during the swap")
            overlapped = True

        wait_until(lambda: reader.reads > 5, 10, "the reader to start")
        result = model.rebuild(page_size=200, before_swap_commit=during_the_swap)
        after_swap = reader.reads
        wait_until(lambda: reader.reads > after_swap + 5, 10, "reads after the swap")
        writer.stop.set()
        writer.join(30)
        assert model.wait_for(model.head(), timeout=30)
        reader.stop.set()
        reader.join(30)
        follower.stop()

        assert reader.errors == [] and writer.errors == []
        assert reader.empty == 0 and reader.went_back == 0
        assert overlapped
        assert result.events >= 1000 and result.resumed_from is None  # 1000 lessons, one event each
        assert follower.last_error is None
        report = model.verify()
        assert report.ok, report.differences[:5]
        [status] = model.status()
        assert status.rebuild is None and status.lag == 0


def readers_waiting(store: Store) -> int:
    """Sessions waiting for a lock on the (old) lessons table."""
    rows = store.query(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = ("
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'lessons' AND n.nspname = %s)",
        (store.database.schema,),
    )
    return int(rows[0][0])


class Interrupted(Exception):
    """Stands for a rebuild process that stopped half-way."""


def interrupt_after(pages: int) -> Any:
    seen = 0

    def on_progress(position: int, head: int) -> None:
        nonlocal seen
        seen += 1
        if seen >= pages:
            raise Interrupted(position)

    return on_progress


def test_an_interrupted_rebuild_leaves_the_live_table_alone_and_resumes(store: Store) -> None:
    ledger = store.open()
    write_requests(ledger, 300)
    with read_model(store, ledger) as model:
        model.catch_up()
        live = table_rows(store)
        live_position = model.position()

        with pytest.raises(Interrupted) as stopped:
            model.rebuild(page_size=50, on_progress=interrupt_after(3))
        [status] = model.status()
        assert status.rebuild is not None and not status.rebuild.running
        assert status.rebuild.position == stopped.value.args[0] < model.head()
        assert status.rebuild.started_at is not None and 0 < status.rebuild.fraction < 1
        assert table_rows(store) == live and model.position() == live_position
        cli = CliRunner().invoke(app, ["projections", "status", "--database-url", store.url])
        assert "interrupted" in cli.output, cli.output

        write_requests(ledger, 20, prefix="later")  # the log moves on meanwhile
        resumed = model.rebuild(page_size=50)
        assert resumed.resumed_from == stopped.value.args[0]
        assert model.position() == model.head()
        assert model.verify().ok
        assert model.status()[0].rebuild is None
        assert model.view.position(SHADOW) is None

        with pytest.raises(Interrupted):
            model.rebuild(page_size=50, on_progress=interrupt_after(2))
        restarted = model.rebuild(restart=True, page_size=50)
        assert restarted.resumed_from is None and restarted.events == store.count_events()
        assert model.verify().ok

        with pytest.raises(Interrupted):
            model.rebuild(page_size=50, on_progress=interrupt_after(2))
        model.abandon_rebuild()
        assert model.status()[0].rebuild is None and model.verify().ok


def test_one_rebuild_at_a_time(store: Store) -> None:
    ledger = store.open()
    write_requests(ledger, 5)
    with read_model(store, ledger) as model:
        other = model.view.runner_lock(SHADOW)
        assert other.acquire(wait=False)
        try:
            with pytest.raises(RunnerBusy):
                model.rebuild()
            cli = CliRunner().invoke(app, ["projections", "rebuild", "--database-url", store.url])
            assert cli.exit_code == 3 and "already running" in cli.output, cli.output
        finally:
            other.release()
        model.rebuild()
        assert model.verify().ok


def test_a_rebuild_that_ends_while_its_status_is_read_is_not_shown_interrupted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status reads the shadow table's position and whether a rebuild holds it: one
    that swaps and lets go in between was reported interrupted (and the Operations page,
    taking it for over, stopped following it with its progress bar left on)."""
    ledger = store.open()
    write_requests(ledger, 20)
    with read_model(store, ledger) as model:
        model.catch_up()
        swapping, go_on = threading.Event(), threading.Event()

        def held_at_the_swap() -> None:
            swapping.set()
            go_on.wait(10)

        rebuilding = threading.Thread(
            target=model.rebuild, kwargs={"before_swap_commit": held_at_the_swap}, daemon=True
        )
        rebuilding.start()
        assert swapping.wait(10), "the rebuild did not reach its swap"
        read_position = model.view.position

        def position(table: Target) -> int | None:
            found = read_position(table)
            if table == SHADOW and threading.current_thread() is not rebuilding:
                go_on.set()  # the rebuild swaps and lets go of its lock now
                rebuilding.join(10)
            return found

        monkeypatch.setattr(model.view, "position", position)
        [status] = model.status()
        monkeypatch.undo()

        assert not rebuilding.is_alive()
        assert status.rebuild is not None, "the shadow was read before the swap"
        assert status.rebuild.running
        [after] = model.status()
        assert after.rebuild is None
