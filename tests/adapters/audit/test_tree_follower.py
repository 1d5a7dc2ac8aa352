"""The log's tree as a projection: builders racing in threads while commands are written
make one tree, every event once; a builder killed with SIGKILL mid-build loses and
repeats nothing; the server's follower keeps it current and signs on a schedule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from adapters.audit.ledger_audit import open_audit
from domain import LessonLedger
from tests.support import ROOT
from tests.support.command_line import cli
from tests.support.http import PROVIDER, lesson
from tests.support.projections import mixed_workload, wait_until
from tests.support.served import served
from tests.support.stores import Store

BUILDER = """
import sys
from adapters.audit.ledger_audit import open_audit
from adapters.eventstore import open_ledger
from adapters.storage.database import Database


def page_done(position, size):  # report each page, then wait to be told to go on
    print(size, flush=True)
    sys.stdin.readline()


url = sys.argv[1]
audit = open_audit(Database.from_url(url), open_ledger(url))
audit.tree.advance(page_size=3, on_page=page_done)
"""


def test_builders_racing_while_commands_are_written_make_one_tree(
    store: Store, ledger: LessonLedger
) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def build() -> None:
        audit = open_audit(store.database, ledger)
        try:
            while not done.is_set():
                audit.tree.advance(page_size=7)
        except BaseException as error:  # counted: the test fails on any
            errors.append(error)
        finally:
            audit.close()

    builders = [threading.Thread(target=build) for _ in range(4)]
    for builder in builders:
        builder.start()
    for _ in range(4):
        mixed_workload(ledger)
    done.set()
    for builder in builders:
        builder.join(60)

    audit = open_audit(store.database, ledger)
    audit.catch_up()
    assert errors == []
    assert audit.tree.size() == store.count_events()
    report = audit.verify()
    audit.close()
    assert report.ok, [str(f) for f in report.comparison.findings]


def test_a_builder_killed_mid_build_loses_and_repeats_nothing(
    store: Store, ledger: LessonLedger
) -> None:
    for _ in range(4):
        mixed_workload(ledger)
    head = store.count_events()
    audit = open_audit(store.database, ledger)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    builder = subprocess.Popen(
        [sys.executable, "-c", BUILDER, store.url],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert builder.stdin is not None and builder.stdout is not None
    try:
        while (reported := int(builder.stdout.readline())) < head // 3:
            builder.stdin.write("go\n")
            builder.stdin.flush()
    finally:
        builder.send_signal(signal.SIGKILL)  # between two pages, a block half full
        builder.wait(10)
    killed_at = audit.tree.size()

    audit.catch_up()

    assert killed_at == reported and 0 < killed_at < head
    assert audit.tree.size() == head
    assert cli("audit", "verify", database_url=store.url).exit_code == 0
    audit.close()


def test_the_servers_follower_keeps_the_tree_and_signs_on_a_schedule(store: Store) -> None:
    with served(store.url, checkpoint_every_seconds=0.2) as api:
        for n in range(5):
            response = api.client.post(
                "/v1/lessons/requests",
                json=lesson(slot=f"{8 + n}:00-{8 + n}:30", request_id=f"r-{n}"),
                headers=api.auth("provider", PROVIDER),
            )
            assert response.status_code == 201, response.text
        admin = api.auth("admin")

        def latest_size() -> int:
            answer = api.client.get("/v1/audit/checkpoint", headers=admin)
            return int(answer.json()["size"]) if answer.status_code == 200 else 0

        wait_until(lambda: latest_size() == 5, what="a checkpoint of all five events")
        ready = api.client.get("/ready").json()
        assert ready["projections"]["merkle"]["lag"] == 0
