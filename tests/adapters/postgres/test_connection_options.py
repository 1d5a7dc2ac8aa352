"""The URL as a provider gives it: libpq options in the query string reach every
connection the ledger opens (its own, the eventsourcing library's pool, the small tables'
pool), against the local server and against a cluster of the test's own with TLS on (a
self-signed certificate made by the test); a password is never shown."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from adapters.eventstore import open_ledger
from adapters.read_model import open_read_model
from adapters.storage.database import Database, DatabaseUrlError, redacted
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from domain import LedgerUnavailable
from tests.support.clusters import (
    Certificates,
    Cluster,
    cluster_folder,
    make_certificates,
    new_cluster,
)
from tests.support.command_line import cli
from tests.support.projections import write_requests
from tests.support.stores import Store


def _open_everything(url: str) -> list[object]:
    """The ledger, the read model and the token store on `url`, each used once."""
    ledger = open_ledger(url)
    write_requests(ledger, 3)
    model = open_read_model(url, ledger=ledger)
    model.catch_up()
    sql = SqlStore(Database.from_url(url))
    TokenStore(sql).create("admin")
    return [model, sql, ledger]


def _close(opened: list[object]) -> None:
    for item in opened:
        item.close()  # type: ignore[attr-defined]


def _sessions(conn: psycopg.Connection[tuple[object, ...]], name: str) -> list[tuple[object, ...]]:
    """(ssl, backend type) of every session whose application_name is `name`."""
    return conn.execute(
        "SELECT coalesce(s.ssl, false), a.backend_type FROM pg_stat_activity a "
        "LEFT JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = %s",
        (name,),
    ).fetchall()


def _own_ports() -> set[int]:
    """The local ports of this process's TCP connections (Linux: its socket inodes in
    /proc/self/fd, looked up in /proc/net/tcp)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def test_libpq_options_reach_every_connection(postgres_store: Store) -> None:
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    url = (
        f"{postgres_store.url}&application_name={name}&connect_timeout=3"
        "&options=-c%20statement_timeout%3D7000&sslmode=prefer"
    )
    postgres_store.close()
    before = _own_ports()  # connections earlier tests may have left open
    opened = _open_everything(url)
    try:
        database = Database.from_url(url)
        with database.connect() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
            sessions = _sessions(conn, name)
            names = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE client_port = ANY(%s)",
                (sorted(_own_ports() - before),),
            ).fetchall()
        # Ours (this one, the write session), the library's pools (ledger, read model),
        # the small tables' pool: every session this process opened carries the name.
        assert len(sessions) >= 5, sessions
        assert {found for (found,) in names} == {name}, names
        ran = cli("projections", "status", "--json", database_url=url)
        assert ran.exit_code == 0, ran.stderr  # the example: `sslmode=prefer` refused
    finally:
        _close(opened)


def test_an_unknown_option_is_refused_naming_it_and_a_password_is_never_shown() -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        Database.from_url("postgresql://me:s3cret@127.0.0.1/test?sslmdoe=require")
    assert 'invalid connection option "sslmdoe"' in str(raised.value)
    assert "s3cret" not in str(raised.value)
    hidden = redacted("postgresql://me:s3cret@db/test?sslmode=require&password=0ther")
    assert "s3cret" not in hidden and "0ther" not in hidden
    ran = cli(
        "projections", "status", database_url="postgresql://me:s3cret@127.0.0.1:1/test?bogus=1"
    )
    assert ran.exit_code == 2 and "s3cret" not in ran.stderr + ran.stdout


# A cluster of the test's own, with TLS on.


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[Cluster, Certificates]]:
    with cluster_folder("ledger-tls-") as home:
        keys = home / "keys"
        keys.mkdir()
        certificates = make_certificates(keys)
        cluster = new_cluster(
            home / "data",
            ssl="on",
            ssl_cert_file=str(certificates.server_cert),
            ssl_key_file=str(certificates.server_key),
        )
        try:
            cluster.start()
            yield cluster, certificates
        finally:
            cluster.stop()


def test_sslmode_require_encrypts_every_session(tls: tuple[Cluster, Certificates]) -> None:
    cluster, _ = tls
    name = f"ledger-tls-{uuid.uuid4().hex[:6]}"
    url = cluster.url(schema="ledger", sslmode="require", application_name=name)
    opened = _open_everything(url)
    try:
        with psycopg.connect(cluster.url()) as conn:
            sessions = _sessions(conn, name)
    finally:
        _close(opened)
    assert len(sessions) >= 4, sessions  # application_name shows in pg_stat_activity
    assert {ssl for ssl, _ in sessions} == {True}, sessions


def test_verify_full_with_the_right_root_connects_and_with_a_wrong_one_fails_clearly(
    tls: tuple[Cluster, Certificates], tmp_path: Path
) -> None:
    cluster, certificates = tls
    right = cluster.url(schema="verified", sslmode="verify-full", sslrootcert=str(certificates.ca))
    _close(_open_everything(right))

    wrong = cluster.url(
        schema="verified", sslmode="verify-full", sslrootcert=str(certificates.other_ca)
    )
    with pytest.raises(LedgerUnavailable) as raised:
        open_ledger(wrong)
    message = str(raised.value)
    assert "\n" not in message
    assert f"cannot reach PostgreSQL at 127.0.0.1:{cluster.port}/postgres" in message
    assert "certificate verify failed" in message
    ran = cli("projections", "status", database_url=wrong)
    assert ran.exit_code == 3
    assert len(ran.stderr.strip().splitlines()) == 1
    assert "certificate verify failed" in ran.stderr
