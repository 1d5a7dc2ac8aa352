"""The HTTP API across a restart of PostgreSQL (a cluster of the test's own, stopped and
started under a running server): every request after the restart is answered, none
fails on a connection the restart ended, and the read model catches up."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import A_REQUEST
from tests.support.clusters import cluster_folder, new_cluster
from tests.support.projections import wait_until
from tests.support.served import served
from tests.support.stores import require_postgres

SLOTS = ("09:00-09:30", "09:30-10:00", "10:00-10:30", "10:30-11:00", "11:00-11:30")


def lesson_request(slot: str) -> dict[str, Any]:
    fields = {name: value for name, value in A_REQUEST.items() if name != "actor"}
    return {
        **fields,
        "time_slot": slot,
        "request_id": f"r-{slot}",
        "details": {"students": [{"id": "student-1", "grade": 3}], "subject": "Reading"},
    }


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_every_request_after_a_postgresql_restart_is_answered() -> None:
    require_postgres()
    with cluster_folder("ledger-restart-http-") as home:
        cluster = new_cluster(home / "data")
        cluster.start()
        try:
            with served(cluster.url(), token_cache_seconds=0.0) as api:
                admin = api.auth("admin")
                first = api.client.post(
                    "/v1/lessons/requests", json=lesson_request("08:30-09:00"), headers=admin
                )
                assert first.status_code == 201, first.text
                keys = api.app.state.ledger.student_data.keys
                cluster.stop()
                wait_until(lambda: not keys.told_of_erasures, 10, "the restart to be noticed")
                cluster.start()

                answered = []
                for slot in SLOTS:
                    sent = api.client.post(
                        "/v1/lessons/requests", json=lesson_request(slot), headers=admin
                    )
                    answered.append(sent.status_code)
                    if sent.status_code == 201:
                        read = api.client.get(
                            f"/v1/lessons/{sent.json()['lesson_id']}",
                            params={"min_position": sent.json()["position"]},
                            headers=admin,
                        )
                        answered.append(read.status_code)

                assert answered == [201, 200] * len(SLOTS)
                listed = api.client.get("/v1/lessons", headers=admin).json()["items"]
                assert len(listed) == 1 + len(SLOTS)
        finally:
            cluster.stop()
