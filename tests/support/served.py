"""The HTTP API served by uvicorn on a free loopback port, for tests through real HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from adapters.http.app import create_app
from adapters.settings import Settings


@dataclass
class Api:
    """A running API: its base URL, its app, and tokens for each role."""

    base_url: str
    app: FastAPI
    client: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str, provider_id: str | None = None) -> dict[str, str]:
        """Authorization header of a (cached) token with this role."""
        name = f"{role}:{provider_id}"
        if name not in self.tokens:
            self.tokens[name] = self.app.state.tokens.create(role, provider_id)[1]
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@contextmanager
def served(database_url: str, **settings: object) -> Iterator[Api]:
    """Serve the API in a thread with uvicorn on a free port; stop it afterwards."""
    settings.setdefault("embedded_worker", "off")  # tests of generation start their own
    app = create_app(Settings(database_url=database_url, **settings))  # type: ignore[arg-type]
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        try:
            yield Api(base_url, app, client)
        finally:
            server.should_exit = True
            thread.join(timeout=20)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving_process(
    database_url: str, log_path: Path, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`lesson-ledger serve` in its own process on a free port: its base URL and process
    (stdout piped, the JSON log in `log_path`); stopped with SIGINT afterwards."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.cli",
                "serve",
                "--workers",
                str(workers),
                "--port",
                str(port),
                "--database-url",
                database_url,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        try:
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start within 60 s"
                time.sleep(0.05)
            yield base_url, process
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
