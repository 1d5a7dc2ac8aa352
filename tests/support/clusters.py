"""PostgreSQL set-ups of the tests' own: PgBouncer (Debian's package) in transaction mode
in front of the local server, and clusters in temporary folders (initdb, pg_basebackup):
one with TLS, a primary with a streaming replica.

Each runs as a child process of the test (as user `postgres` when the tests run as root:
PgBouncer and PostgreSQL refuse root), on a free port, and is stopped by its pid and its
folder removed afterwards. Without pgbouncer, or PostgreSQL's server programs, or
openssl, the tests that need them skip and say so; with CI=true they fail instead (as
`require_postgres` does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support.served import free_port
from tests.support.stores import IN_CI, POSTGRES_URL, require_postgres

START_SECONDS = 30.0
AS_ROOT = os.geteuid() == 0


def _pg_bindir() -> Path | None:
    """Where PostgreSQL's server programs are: `pg_config --bindir`, else Debian's
    /usr/lib/postgresql/<newest>/bin."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda path: float(path.parent.name) if path.parent.name[:1].isdigit() else 0,
        )
        return found[-1] if found else None


PG_BIN = _pg_bindir()


def require(tool: str) -> str:
    """The path of a program the test needs: pgbouncer, openssl, or one of PostgreSQL's
    server programs (initdb, postgres, pg_basebackup); skip without it (fail in CI)."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")
    if found is None and PG_BIN is not None and (PG_BIN / tool).exists():
        found = str(PG_BIN / tool)
    if found is not None:
        return found
    problem = f"{tool} is not installed (Debian: apt-get install -y " + (
        f"{tool})" if tool in ("pgbouncer", "openssl") else "postgresql)"
    )
    if IN_CI:
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


def _owner() -> dict[str, Any]:
    """subprocess arguments that run a server as `postgres` when the tests run as root."""
    return {"user": "postgres", "group": "postgres"} if AS_ROOT else {}


def _folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if AS_ROOT:
        shutil.chown(folder, "postgres", "postgres")
    return folder


def _run(args: list[str], **options: Any) -> None:
    result = subprocess.run(args, capture_output=True, text=True, **_owner(), **options)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()[-2000:]}")


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGINT) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_until_accepting(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    """Wait (with a deadline) until a server accepts connections on `url`."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no connection within {START_SECONDS} s: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.05)


# PgBouncer.


@dataclass
class Bouncer:
    """A running PgBouncer: `url(...)` is the local server's test database through it."""

    port: int
    process: subprocess.Popen[bytes]

    def url(self, **options: str) -> str:
        parts = urlsplit(POSTGRES_URL)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"postgresql://{parts.username}@127.0.0.1:{self.port}{parts.path}" + (
            f"?{query}" if query else ""
        )


@contextmanager
def pgbouncer(pool_size: int = 20) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the local PostgreSQL, on a free port,
    with a temporary configuration (trust, as the local server); stopped afterwards."""
    require_postgres()
    binary = require("pgbouncer")
    server = urlsplit(POSTGRES_URL)
    folder = _folder("pgbouncer-")
    port = free_port()
    users = folder / "users.txt"
    users.write_text('"postgres" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host={server.hostname} port={server.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,options
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""
    )
    if AS_ROOT:
        for path in (users, config):
            shutil.chown(path, "postgres", "postgres")
    process = subprocess.Popen([binary, str(config)], stderr=subprocess.DEVNULL, **_owner())
    bouncer = Bouncer(port, process)
    try:
        wait_until_accepting(bouncer.url(), process, folder / "pgbouncer.log")
        yield bouncer
    finally:
        _stop(process, signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)


# Clusters of the tests' own.


@dataclass
class Cluster:
    """A PostgreSQL cluster in a temporary folder, running on `port` (trust auth)."""

    data: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def url(self, database: str = "postgres", user: str = "postgres", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def start(self) -> None:
        args = [require("postgres"), "-D", str(self.data), "-p", str(self.port)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data}"]
        for name, value in {"fsync": "off", **self.settings}.items():
            args += ["-c", f"{name}={value}"]
        log = self.data / "server.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=out, **_owner())
        wait_until_accepting(self.url(), self.process, log)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)  # SIGINT: a fast shutdown
            self.process = None

    def execute(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


def new_cluster(folder: Path, *, hba: str = "", **settings: str) -> Cluster:
    """initdb a cluster in `folder` (trust for local and 127.0.0.1, plus `hba` lines)."""
    _run([require("initdb"), "-D", str(folder), "-A", "trust", "-U", "postgres", "--no-sync"])
    with (folder / "pg_hba.conf").open("a") as conf:
        conf.write(hba)
    return Cluster(folder, free_port(), settings=settings)


@contextmanager
def cluster_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder the `postgres` user owns; removed afterwards."""
    folder = _folder(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def primary_and_replica() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and its streaming replica (pg_basebackup -R), each on a port of its own,
    with a `test` database; both stopped afterwards."""
    with cluster_folder("ledger-primary-") as home:
        primary = new_cluster(home / "primary", hba="host replication all 127.0.0.1/32 trust\n")
        replica: Cluster | None = None
        try:
            primary.start()
            primary.execute("CREATE DATABASE test")
            replica = Cluster(home / "replica", free_port())
            _run(
                [
                    require("pg_basebackup"),
                    *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
                    *("-D", str(replica.data), "-R", "-X", "stream", "--no-sync"),
                    "--checkpoint=fast",  # not the spread checkpoint: minutes
                ]
            )
            replica.start()
            yield primary, replica
        finally:
            if replica is not None:
                replica.stop()
            primary.stop()


@dataclass(frozen=True)
class Certificates:
    """A certificate authority, a server certificate it signed (for 127.0.0.1), and
    another authority that signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path


def make_certificates(folder: Path) -> Certificates:
    """Self-signed test certificates, made with openssl (P-256 keys, valid one day)."""
    openssl = require("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        files = ("-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.crt"))
        run("req", "-x509", *key, "-days", "1", "-subj", f"/CN=lesson-ledger {name}", *files)
    files = ("-keyout", str(folder / "server.key"), "-out", str(folder / "server.csr"))
    run("req", *key, "-subj", "/CN=127.0.0.1", *files)
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    authority = ("-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key"), "-CAcreateserial")
    files = ("-in", str(folder / "server.csr"), "-out", str(folder / "server.crt"))
    run("x509", "-req", "-days", "1", *authority, "-extfile", str(folder / "san.cnf"), *files)
    server_key = folder / "server.key"
    server_key.chmod(0o600)
    if AS_ROOT:
        shutil.chown(server_key, "postgres", "postgres")
        shutil.chown(folder / "server.crt", "postgres", "postgres")
    return Certificates(
        folder / "ca.crt", folder / "server.crt", server_key, folder / "other-ca.crt"
    )
