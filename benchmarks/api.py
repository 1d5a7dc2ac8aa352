"""The HTTP comparison: `lesson-ledger serve --workers N` against the plain FastAPI
endpoint of benchmarks/plain_api.py on the old table, N = 1, 2 and 4, on one PostgreSQL.

For each N the two servers take turns, `rounds` times each, every round in a process
of its own and with keys of its own (so every request should be answered 201); the same
client processes send `POST /v1/lessons/requests` over keep-alive connections. Each
client sends one request first (connecting and warm-up are not timed), then all start
together; a rate is the timed requests over the seconds until the last client finished.
A side's figure is the median of its rounds. The ledger's generation worker is off (on
PostgreSQL it runs in processes of its own); its projection follower runs, as deployed.
A keep-alive connection stays with the server process that accepted it, so the requests
each ledger process served are read from its JSON log: with few connections the split
can be uneven.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks.stores import StoreSpec
from benchmarks.workload import Request, requests
from benchmarks.writes import _chunks, run_together

PATH = "/v1/lessons/requests"
LESSON_LEDGER = str(Path(sys.executable).with_name("lesson-ledger"))  # this venv's script
READY_WITHIN_S = 60.0
STOP_WITHIN_S = 30.0
STARTED = "Application startup complete."  # uvicorn's line, once per server process
SIDES = ("ledger", "plain")
FOLLOWERS = 2  # the ledger's: the read model's and the log tree's


@dataclass(frozen=True)
class ApiRate:
    """One side's round at one server size: timed requests and their seconds, every
    outcome by HTTP status (warm-up requests included), and the requests each server
    process served (the ledger's, from its log)."""

    workers: int
    requests: int
    seconds: float
    outcomes: dict[str, int]
    per_process: list[int]
    server_errors: list[str]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ApiComparison:
    """Both sides' rounds at one server size; each side's figure is its median round."""

    workers: int
    rounds: dict[str, list[ApiRate]]

    def median(self, side: str) -> ApiRate:
        ordered = sorted(self.rounds[side], key=lambda rate: rate.per_second)
        return ordered[len(ordered) // 2]

    @property
    def ratio(self) -> float:
        plain = self.median("plain").per_second
        return self.median("ledger").per_second / plain if plain else 0.0


def measure(
    spec: StoreSpec, workers: Sequence[int], count: int, clients: int, rounds: int,
    step: Callable[[str], None],
) -> dict[int, ApiComparison]:  # fmt: skip
    """`count` timed requests from `clients` processes against each side and size."""
    token = admin_token(spec)
    compared = {}
    for n in workers:
        taken: dict[str, list[ApiRate]] = {side: [] for side in SIDES}
        for number in range(rounds):
            for side in SIDES if number % 2 == 0 else reversed(SIDES):
                step(f"HTTP API: {side}, {n} server processes, {clients} client processes")
                rate = _measure_one(spec, side, token, n, count, clients, f"{n}-{number}")
                taken[side].append(rate)
                step(f"HTTP API: {side} {rate.per_second:,.0f} req/s, {rate.outcomes}, "
                     f"requests per server process {rate.per_process}")  # fmt: skip
                if rate.server_errors:
                    step(f"HTTP API: {len(rate.server_errors)} server errors, "
                         f"first: {rate.server_errors[0]}")  # fmt: skip
        compared[n] = ApiComparison(n, taken)
        step(f"HTTP API: {n} server processes, ledger/plain {compared[n].ratio:.2f}")
    return compared


def admin_token(spec: StoreSpec) -> str:
    """A token in the run's schema; an admin may request for any provider (the workload
    has many), and with one the server creates no first admin of its own."""
    from adapters.storage.database import Database
    from adapters.storage.sqlstore import SqlStore
    from adapters.storage.tokens import TokenStore

    sql = SqlStore(Database.from_url(spec.ledger_url))
    try:
        return TokenStore(sql).create("admin", name="bench-api")[1]
    finally:
        sql.close()


def _measure_one(
    spec: StoreSpec, side: str, token: str, workers: int, count: int, clients: int, label: str
) -> ApiRate:
    work = requests(f"api-{side}-{label}", 0, count + clients)  # a warm-up request each
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        log = Path(folder) / "server.log"
        command = _command(spec, side, token, workers)
        with _serving(command, workers, log, ledger=side == "ledger") as base_url:
            seconds, outcomes = _run_clients(base_url, token, _chunks(work, clients))
        served, errors = _read_log(log)
    return ApiRate(workers, count, seconds, dict(outcomes), served, errors)


# The servers.


def _command(
    spec: StoreSpec, side: str, token: str, workers: int
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve one side (the port appended later)."""
    if side == "ledger":
        env = {
            "LESSON_LEDGER_DATABASE_URL": spec.ledger_url,
            "LESSON_LEDGER_EMBEDDED_WORKER": "off",  # generation would compete for the cores
        }
        return [LESSON_LEDGER, "serve", "--workers", str(workers), "--port"], env
    env = {
        "PLAIN_API_DATABASE_URL": spec.server_url,
        "PLAIN_API_TABLE": spec.baseline_table,
        "PLAIN_API_TOKEN": token,
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "benchmarks.plain_api:app"]
    return [*uvicorn, "--workers", str(workers), "--port"], env


@contextmanager
def _serving(
    command: tuple[list[str], dict[str, str]], workers: int, log: Path, *, ledger: bool
) -> Iterator[str]:
    """The server on a free port, its output in `log`: its base URL once it is ready."""
    port = _free_port()
    arguments, settings = command
    with log.open("w") as out:  # a session of its own: its group is killed if it hangs
        process = subprocess.Popen(
            [*arguments, str(port)],
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base_url, log, workers, FOLLOWERS if ledger else 0)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_WITHIN_S)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(
    process: subprocess.Popen[bytes], base_url: str, log: Path, workers: int, followers: int
) -> None:
    # Every process must have started before the clients connect: a connection stays
    # with the process that accepted it, so early ones would all land on the first. And
    # the ledger's followers must be at work, as deployed, not starting during the round.
    deadline = time.monotonic() + READY_WITHIN_S
    while not (
        _started(log) >= workers
        and _followers_active(log) >= followers
        and _answers(f"{base_url}/ready")
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server was not ready in {READY_WITHIN_S:g} s:\n{_tail(log)}")
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)  # the pause between polls, cut short by an exit
            raise RuntimeError(f"the server exited ({process.returncode}):\n{_tail(log)}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _log_lines(log: Path) -> Iterator[dict[str, Any]]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):  # the JSON log; `serve` also prints plain lines
            with suppress(json.JSONDecodeError):
                yield json.loads(line)


def _followers_active(log: Path) -> int:
    return len({e["message"] for e in _log_lines(log) if e.get("state") == "active"})


def _started(log: Path) -> int:
    # Each server process says it once: in the ledger's JSON log, or uvicorn's plain one.
    return sum(STARTED in line for line in log.read_text(errors="replace").splitlines())


def _read_log(log: Path) -> tuple[list[int], list[str]]:
    """Lesson requests served by each process (most first), and the error lines."""
    served: Counter[int] = Counter()
    errors = []
    for entry in _log_lines(log):
        if entry.get("message") == "request" and entry.get("path") == PATH:
            served[entry["pid"]] += 1
        if entry.get("level") in ("ERROR", "CRITICAL"):
            errors.append(f"{entry['message']} {entry.get('error', '')}".strip())
    return sorted(served.values(), reverse=True), errors


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# The clients.


def _run_clients(
    base_url: str, token: str, shares: Sequence[list[Request]]
) -> tuple[float, Counter[str]]:
    """One spawned HTTP client process per share, started together once each has warmed up."""
    return run_together(_client, [(base_url, token, share) for share in shares])


def _client(
    base_url: str, token: str, work: list[Request], ready: Any, start: Any, results: Any
) -> None:
    # The standard library's client, one keep-alive connection: httpx spent about three
    # times its CPU per request, taken from the cores the servers under test share.
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        outcomes = _send(connection, headers, work[:1])  # connect: it stays with its server
        ready.put(os.getpid())
        start.wait()
        began = time.monotonic()
        outcomes.update(_send(connection, headers, work[1:]))
        results.put((began, time.monotonic(), dict(outcomes)))
    finally:
        connection.close()


def _send(
    connection: http.client.HTTPConnection, headers: dict[str, str], work: Sequence[Request]
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for request in work:
        body = request.as_ledger_item()
        del body["actor"]  # the server records the token's name as the actor
        try:
            connection.request("POST", PATH, json.dumps(body), headers)
            response = connection.getresponse()
            response.read()
            outcomes[str(response.status)] += 1
        except (OSError, http.client.HTTPException) as error:  # counted, never hidden
            outcomes[f"error: {type(error).__name__}"] += 1
            connection.close()  # the next request connects again
    return outcomes
