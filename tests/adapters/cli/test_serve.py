"""`lesson-ledger serve` (what `make run` starts): the embedded SQLite default, the
first admin token created and printed once, and `/metrics` over several processes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from tests.support.command_line import ANY_PORT, Ran, cli_process
from tests.support.project import declared_version
from tests.support.served import serving_process
from tests.support.stores import Store

PROVIDER = "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11"


def test_the_first_start_prints_an_admin_token_once_and_it_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serving_process(url, tmp_path / "first.log") as (base_url, process):
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("Created the first admin token")
        token = first_line.rsplit(" ", 1)[1].strip()
        body = {
            "providerId": PROVIDER,
            "schoolId": "school-1",
            "lessonDate": "2025-09-08",
            "timeSlot": "08:30-09:00",
            "requestId": "first-request",
            "details": {"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"},
        }
        response = httpx.post(
            f"{base_url}/v1/lessons/requests",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201
        # The embedded worker generates it: no other process needed on the default.
        lesson_id, headers = response.json()["lesson_id"], {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:
            lesson = httpx.get(f"{base_url}/v1/lessons/{lesson_id}", headers=headers).json()
            if lesson.get("status") == "generated":
                break
            assert time.monotonic() < deadline, f"not generated within 30 s: {lesson}"
            time.sleep(0.05)
        assert lesson["content"]["lesson"]["title"] and lesson["model"]

    with serving_process(url, tmp_path / "second.log") as (_, again):
        assert again.stdout is not None
        signed_by, serving = again.stdout.readline(), again.stdout.readline()
        assert signed_by.startswith("Checkpoints are signed by the public key")
        assert serving.startswith(f"Serving lesson-ledger {declared_version()} on http://")
    assert token not in (tmp_path / "first.log").read_text()


def _served_by(log: Path, path: str) -> set[int]:
    """The server processes that logged answering `path`."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "request" and entry.get("path") == path:
                pids.add(entry["pid"])
    return pids


def test_metrics_from_any_server_process_count_every_process(store: Store, tmp_path: Path) -> None:
    """`serve --workers 2`: lesson requests land on both processes, and `/metrics`, which
    ever process answers it, counts all of them."""
    store.open().close()  # the tables exist before the processes start
    sql = SqlStore(store.database)
    token = TokenStore(sql).create("admin", name="metrics-test")[1]
    sql.close()
    headers = {"Authorization": f"Bearer {token}"}
    log = tmp_path / "server.log"
    path = "/v1/lessons/requests"
    with serving_process(store.url, log, workers=2) as (base_url, _):
        accepted, deadline = 0, time.monotonic() + 60
        while len(_served_by(log, path)) < 2:  # a new connection each: either may take it
            assert time.monotonic() < deadline, "one process took every connection"
            body = {
                "providerId": PROVIDER, "schoolId": "school-1", "lessonDate": "2025-09-08",
                "timeSlot": f"{8 + accepted // 2:02d}:{30 * (accepted % 2):02d}-"
                f"{8 + accepted // 2:02d}:{30 * (accepted % 2) + 29:02d}",
                "requestId": f"metrics-{accepted}",
                "details": {"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"},
            }  # fmt: skip
            response = httpx.post(f"{base_url}{path}", json=body, headers=headers)
            assert response.status_code == 201, response.text
            accepted += 1
        line = f'lesson_ledger_commands_total{{command="request",outcome="accepted"}} {accepted}.0'
        while len(_served_by(log, "/metrics")) < 2:
            assert time.monotonic() < deadline, "one process answered every scrape"
            text = httpx.get(f"{base_url}/metrics").text
            assert line in text.splitlines(), text
            # The release once, as each process states it, not once per process.
            release = f'lesson_ledger_build_info{{version="{declared_version()}"}} 1.0'
            assert [x for x in text.splitlines() if "build_info{" in x] == [release], text


def _followers_active(log: Path) -> dict[str, int]:
    """Each projection whose follower the log says became active, and in which process."""
    active = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("state") == "active":
                active[entry["message"].removesuffix(" active")] = entry["pid"]
    return active


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.05)


def test_on_postgresql_the_followers_run_beside_the_request_processes(
    postgres_store: Store, tmp_path: Path
) -> None:
    """`serve` on PostgreSQL: the read model and the log's tree are followed by a process
    of their own, not by the process answering requests, and kept current; after `serve`
    is killed with SIGKILL, a new start's followers take over and miss nothing."""
    postgres_store.open().close()
    sql = SqlStore(postgres_store.database)
    headers = {"Authorization": f"Bearer {TokenStore(sql).create('admin', name='follow')[1]}"}
    sql.close()
    path = "/v1/lessons/requests"

    def request(base_url: str, slot: str) -> str:
        body = {
            "providerId": PROVIDER, "schoolId": "school-1", "lessonDate": "2025-09-08",
            "timeSlot": slot, "requestId": f"follow-{slot}",
            "details": {"students": [{"id": "st-1", "grade": 3}], "subject": "Reading"},
        }  # fmt: skip
        response = httpx.post(f"{base_url}{path}", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return str(response.json()["lesson_id"])

    def current(base_url: str, lesson_id: str) -> bool:
        found = httpx.get(f"{base_url}/v1/lessons/{lesson_id}", headers=headers)
        tree = httpx.get(f"{base_url}/v1/projections", headers=headers).json()
        return found.status_code == 200 and all(p["lag"] == 0 for p in tree)

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with serving_process(postgres_store.url, first_log) as (base_url, server):
        lesson = request(base_url, "08:30-09:00")
        _wait_for("the read model and the tree current", lambda: current(base_url, lesson))
        followers = _followers_active(first_log)
        assert set(followers) == {"lessons follower", "merkle tree"}
        assert set(followers.values()).isdisjoint(_served_by(first_log, path) | {server.pid})
        server.kill()  # SIGKILL: it cannot tell its followers' process to stop
        server.wait(timeout=20)
    with serving_process(postgres_store.url, second_log) as (base_url, _):
        _wait_for(
            "the new start's followers active",
            lambda: set(_followers_active(second_log)) == {"lessons follower", "merkle tree"},
        )
        lesson = request(base_url, "09:00-09:30")
        _wait_for("the read model and the tree current", lambda: current(base_url, lesson))


def test_a_port_beyond_65535_is_refused_not_wrapped(tmp_path: Path) -> None:
    """70000 was served on 4464 (70000 - 65536) while the banner said 70000."""
    database = tmp_path / "ledger.db"

    # A process of its own: refused, it ends at once; served, it would run until killed.
    ran = cli_process(
        "serve", "--port", "70000", "--database-url", f"sqlite:///{database}", timeout=30
    )

    assert ran.exit_code == 2
    assert "--port" in ran.stderr and "65535" in ran.stderr
    assert not database.exists()  # nothing started


def serve_on_a_port_in_use(database: Path) -> tuple[Ran, int]:
    """`serve` told to listen on a port another socket listens on; the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = cli_process(
            "serve", "--port", str(port), "--database-url", f"sqlite:///{database}", timeout=30
        )
    return ran, port


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    """The banner said it was serving, the ledger started, then uvicorn's log line said
    the address was in use."""
    database = tmp_path / "ledger.db"

    ran, port = serve_on_a_port_in_use(database)

    assert ran.exit_code == 3
    assert ran.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Serving" not in ran.stdout
    assert not database.exists()  # nothing started


def test_a_bad_setting_is_named_before_a_port_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both wrong: the setting is said first (it was said only once the port was free)."""
    monkeypatch.setenv("LESSON_LEDGER_LOG_LEVEL", "bogus")
    database = tmp_path / "ledger.db"

    ran, _ = serve_on_a_port_in_use(database)

    assert ran.exit_code == 2
    assert ran.stderr.strip().startswith("invalid: setting LESSON_LEDGER_LOG_LEVEL: ")
    assert not database.exists()


def test_a_host_that_is_no_address_is_named(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"

    ran = cli_process(
        "serve", "--host", "999.1.1.1", "--database-url", f"sqlite:///{database}", timeout=30
    )

    assert ran.exit_code == 2
    assert ran.stderr.startswith("invalid: --host: '999.1.1.1' is not an address to listen on")
    assert not database.exists()


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("LESSON_LEDGER_RETENTION_DAYS", "0", "greater than or equal to 1"),
        ("LESSON_LEDGER_RETENTION_DAYS", "-30", "greater than or equal to 1"),
        ("LESSON_LEDGER_TOKEN_CACHE_SECONDS", "-1", "greater than or equal to 0"),
        ("LESSON_LEDGER_JWT_LEEWAY_SECONDS", "-5", "greater than or equal to 0"),
        # "inf" passed every lower bound: a token revoked elsewhere kept working, every page
        # was a 500 (a session of infinite hours); a session beyond 2.4e10 hours too.
        ("LESSON_LEDGER_TOKEN_CACHE_SECONDS", "inf", "finite number"),
        ("LESSON_LEDGER_SESSION_HOURS", "inf", "finite number"),
        ("LESSON_LEDGER_SESSION_HOURS", "1e12", "less than or equal to 8784"),
        # Waits past threading's TIMEOUT_MAX (9.2e9 s) raised OverflowError in the thread
        # waiting: a read with min_position a 500, the checkpointing thread dead.
        ("LESSON_LEDGER_MIN_POSITION_WAIT_SECONDS", "1e10", "less than or equal to 300"),
        ("LESSON_LEDGER_CHECKPOINT_EVERY_SECONDS", "1e10", "less than or equal to 2678400"),
        # The worker's, where the server generates (SQLite): a traceback in a log line,
        # after the banner said it was serving.
        ("LESSON_LEDGER_WORKER_POLL_SECONDS", "1e10", "less than or equal to 60"),
        ("LESSON_LEDGER_OPENAI_TEMPERATURE", "5", "less than or equal to 2"),
        # A traceback (logging's "Unknown level"); an origin no browser sends, taken.
        ("LESSON_LEDGER_LOG_LEVEL", "bogus", "must be one of DEBUG, INFO, WARNING, ERROR"),
        ("LESSON_LEDGER_CORS_ORIGINS", "calendar.example.org", "is not an origin such as"),
    ],
)
def test_a_setting_out_of_its_range_stops_the_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str, said: str
) -> None:
    """A retention of 0 days would erase the students' data of every lesson before today,
    and a negative one the coming lessons' too: refused before anything starts."""
    monkeypatch.setenv(setting, value)
    database = tmp_path / "ledger.db"

    ran = cli_process("serve", *ANY_PORT, "--database-url", f"sqlite:///{database}", timeout=30)

    assert ran.exit_code == 2
    assert ran.stderr.strip().startswith(f"invalid: setting {setting}: ")
    assert said in ran.stderr and "Value error" not in ran.stderr
    assert not database.exists()


def test_a_generator_that_cannot_be_made_stops_the_start_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server generates on SQLite: its generator's settings are checked as the
    worker's are (it was a traceback in a log line after the banner)."""
    monkeypatch.setenv("LESSON_LEDGER_GENERATOR", "openai")
    monkeypatch.delenv("LESSON_LEDGER_OPENAI_API_KEY", raising=False)
    database = tmp_path / "ledger.db"

    ran = cli_process("serve", *ANY_PORT, "--database-url", f"sqlite:///{database}", timeout=30)

    assert ran.exit_code == 2
    assert ran.stderr.strip() == (
        "invalid: the openai generator needs LESSON_LEDGER_OPENAI_API_KEY for api.openai.com"
    )
    assert not database.exists()


def test_a_replica_url_given_to_a_sqlite_ledger_is_said_not_to_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has no replica or direct session: such URLs are not used, and the start says
    so (it said nothing, and reads a school thought went to a replica came from the file),
    but still serves: a copy of a database is opened with a deployment's settings."""
    monkeypatch.setenv("LESSON_LEDGER_READ_DATABASE_URL", "postgresql://ledger@replica/ledger")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    with serving_process(url, tmp_path / "serve.log") as (base_url, process):
        assert process.stdout is not None
        banner = [process.stdout.readline()]
        while banner[-1] and not banner[-1].startswith("Serving lesson-ledger"):
            banner.append(process.stdout.readline())  # the banner, in full once served
        assert httpx.get(f"{base_url}/health").status_code == 200

    said = [line for line in banner if line.startswith("Not used")]
    assert said == [
        "Not used: LESSON_LEDGER_READ_DATABASE_URL (the database is SQLite; it is PostgreSQL's)\n"
    ]
