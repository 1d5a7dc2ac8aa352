"""Reads from a real streaming replica: a primary and its replica made by the test
(initdb, pg_basebackup -R, each on a port of its own). The read model's queries and the
histories are served by the replica; `min_position` is honoured across replica lag
(replay paused on the replica); a replica too far behind, or stopped mid-test, sends
reads to the primary; `/ready` and `/metrics` show its state and lag; a read URL that is
not a replica of this primary is one line at start."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.eventstore import open_ledger
from adapters.read_model import open_read_model
from adapters.read_routing import open_reads
from adapters.storage.database import READ_URL_SETTING, Database, DatabaseUrlError
from tests.support.clusters import Cluster, primary_and_replica
from tests.support.http import PROVIDER, lesson
from tests.support.projections import wait_until
from tests.support.served import Api, served
from tests.support.stores import POSTGRES_URL, require_postgres

pytestmark = pytest.mark.timeout(180)

MAX_LAG = 3.0
RESUME_AFTER = 1.0


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    with primary_and_replica() as pair:
        yield pair


@dataclass
class Replicated:
    """The API served on the test's primary, reading from its replica."""

    api: Api
    primary: Cluster
    replica: Cluster

    def request(self, slot: str) -> tuple[str, int]:
        """A new lesson requested: its id and the command's position."""
        answer = self.api.client.post(
            "/v1/lessons/requests",
            json=lesson(slot=slot, request_id=f"r-{slot}"),
            headers=self.api.auth("provider", PROVIDER),
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["lesson_id"], answer.json()["position"]

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.api.client.get(path, params=params, headers=self.api.auth("admin"))

    def listed(self, **params: object) -> set[str]:
        answer = self.get("/v1/lessons", **params)
        assert answer.status_code == 200, answer.text
        return {row["lesson_id"] for row in answer.json()["items"]}

    def reads(self, source: str) -> float:
        """How many reads `source` (replica or primary) answered, from /metrics."""
        text = self.get("/metrics").text
        found = re.search(rf'^lesson_ledger_reads_total{{source="{source}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def replica_state(self) -> dict[str, Any]:
        ready = self.get("/ready")
        assert ready.status_code == 200, ready.text
        state: dict[str, Any] = ready.json()["replica"]
        return state

    def pause_replay(self) -> None:
        self.replica.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self, after: float = 0.0) -> None:
        timer = threading.Timer(after, self.replica.execute, ("SELECT pg_wal_replay_resume()",))
        timer.start()


@pytest.fixture
def replicated(
    clusters: tuple[Cluster, Cluster], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Replicated]:
    primary, replica = clusters
    schema = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(READ_URL_SETTING, replica.url("test", schema=schema))
    monkeypatch.setenv("LESSON_LEDGER_REPLICA_MAX_LAG_SECONDS", str(MAX_LAG))
    with served(primary.url("test", schema=schema), min_position_wait_seconds=5.0) as api:
        yield Replicated(api, primary, replica)
    replica.execute("SELECT pg_wal_replay_resume()")  # whatever the test left


def test_reads_are_served_by_the_replica_and_min_position_is_honoured_across_its_lag(
    replicated: Replicated,
) -> None:
    first, position = replicated.request("08:00-08:30")
    found = replicated.get(f"/v1/lessons/{first}", min_position=position)
    assert found.status_code == 200 and found.json()["lesson_id"] == first
    assert replicated.reads("replica") == 1 and replicated.reads("primary") == 0
    assert replicated.replica_state()["state"] == "serving"

    # Replay paused: the replica serves what it has, which is behind.
    replicated.pause_replay()
    second, position = replicated.request("09:00-09:30")
    assert replicated.listed() == {first}  # stale: proof that the replica answered
    # With the command's position the read waits until the replica has it.
    replicated.resume_replay(after=RESUME_AFTER)
    assert replicated.listed(min_position=position) == {first, second}
    assert replicated.reads("primary") == 0

    # Replay paused for good: the replica is waited for up to its allowed lag, then the
    # primary answers.
    replicated.pause_replay()
    third, position = replicated.request("10:00-10:30")
    answer = replicated.get(f"/v1/lessons/{third}", min_position=position)
    assert answer.status_code == 200 and answer.json()["lesson_id"] == third
    assert replicated.reads("primary") == 1
    # ... and once it is further behind than allowed, every read goes to the primary.
    state = wait_until(
        lambda: s if (s := replicated.replica_state())["state"] == "lagging" else None,
        10,
        "lagging",
    )
    assert state["lag_seconds"] > MAX_LAG
    assert replicated.listed() == {first, second, third}
    metrics = replicated.get("/metrics").text
    assert "lesson_ledger_replica_serving 0.0" in metrics
    lag = re.search(r"^lesson_ledger_replica_lag_seconds (\S+)$", metrics, re.M)
    assert lag is not None and float(lag.group(1)) > MAX_LAG

    replicated.resume_replay()
    wait_until(lambda: replicated.replica_state()["state"] == "serving", 10, "serving again")
    assert "lesson_ledger_replica_serving 1.0" in replicated.get("/metrics").text


def test_a_history_is_read_from_the_replica_once_it_has_the_commands_event(
    replicated: Replicated,
) -> None:
    lesson_id, _ = replicated.request("11:00-11:30")
    replicated.pause_replay()
    cancelled = replicated.api.client.post(
        f"/v1/lessons/{lesson_id}/cancellation",
        json={"requestId": "cancel-1", "reason": "moved"},
        headers=replicated.api.auth("provider", PROVIDER),
    )
    assert cancelled.status_code == 201, cancelled.text
    position = cancelled.json()["position"]
    before = replicated.reads("replica")
    stale = replicated.get(f"/v1/lessons/{lesson_id}/history")
    assert [e["event"] for e in stale.json()["entries"]] == ["OpenedByRequest"]

    replicated.resume_replay(after=RESUME_AFTER)
    history = replicated.get(f"/v1/lessons/{lesson_id}/history", min_position=position)
    assert history.status_code == 200, history.text
    assert [e["event"] for e in history.json()["entries"]] == ["OpenedByRequest", "LessonCancelled"]
    assert replicated.reads("replica") == before + 2


def test_a_replica_stopped_mid_test_sends_reads_to_the_primary(replicated: Replicated) -> None:
    first, position = replicated.request("12:00-12:30")
    assert replicated.listed(min_position=position) == {first}
    replicated.replica.stop()
    try:
        second, position = replicated.request("12:30-13:00")
        # The first read after the stop may meet the dead replica: the primary answers it.
        assert replicated.listed(min_position=position) == {first, second}
        assert replicated.listed() == {first, second}
        history = replicated.get(f"/v1/lessons/{second}/history", min_position=position)
        assert history.status_code == 200
        state = wait_until(
            lambda: s if (s := replicated.replica_state())["state"] == "down" else None,
            10,
            "down",
        )
        assert state["lag_seconds"] is None
        assert "lesson_ledger_replica_lag_seconds -1.0" in replicated.get("/metrics").text
        assert replicated.get("/ready").status_code == 200  # the primary still serves
    finally:
        replicated.replica.start()
    wait_until(lambda: replicated.replica_state()["state"] == "serving", 20, "serving again")
    assert replicated.listed() == {first, second}


def test_a_server_starts_with_its_replica_down_and_reads_from_it_once_it_is_up(
    clusters: tuple[Cluster, Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = clusters
    schema = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(READ_URL_SETTING, replica.url("test", schema=schema))
    replica.stop()
    try:
        with served(primary.url("test", schema=schema)) as api:
            down = Replicated(api, primary, replica)
            lesson_id, position = down.request("14:00-14:30")
            assert down.listed(min_position=position) == {lesson_id}
            history = down.get(f"/v1/lessons/{lesson_id}/history", min_position=position)
            assert history.status_code == 200
            assert down.replica_state()["state"] == "down"
            assert down.reads("replica") == 0 and down.reads("primary") == 2
            replica.start()
            wait_until(lambda: down.replica_state()["state"] == "serving", 20, "serving")
            assert down.listed(min_position=position) == {lesson_id}
            history = down.get(f"/v1/lessons/{lesson_id}/history", min_position=position)
            assert history.status_code == 200 and down.reads("replica") == 2
    finally:
        if replica.process is None:
            replica.start()


def test_a_read_url_that_is_not_a_replica_of_this_primary_is_one_line_at_start(
    clusters: tuple[Cluster, Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    primary, _ = clusters
    schema = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(READ_URL_SETTING, POSTGRES_URL)  # another server altogether
    database = Database.from_url(primary.url("test", schema=schema))
    ledger = open_ledger(database)
    model = open_read_model(database, ledger=ledger)
    try:
        with pytest.raises(DatabaseUrlError) as raised:
            open_reads(database, model, ledger)
    finally:
        model.close()
        ledger.close()
    message = str(raised.value)
    assert "\n" not in message
    assert "LESSON_LEDGER_READ_DATABASE_URL" in message and "is not a replica" in message
