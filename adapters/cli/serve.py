"""`lesson-ledger serve`: the HTTP API in one or more server processes (uvicorn)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
import uvicorn

from adapters.audit.signing import open_signer, public_key_text
from adapters.auth.jwt_tokens import JwtVerifier
from adapters.cli.options import DatabaseUrl, bad_input, exit_codes
from adapters.cli.tokens import with_tokens
from adapters.eventstore import open_ledger
from adapters.followers import following_apart
from adapters.generators import check_generator
from adapters.http.app import ledger_keys
from adapters.http.metrics import MULTIPROCESS_DIR
from adapters.postgres.rights import check_rights
from adapters.release import VERSION
from adapters.settings import Settings
from adapters.storage.database import (
    DATABASE_URL_SETTING,
    Database,
    redacted,
    unused_on_sqlite,
)
from adapters.worker import WorkerSettings

FOLLOW_PROJECTIONS_SETTING = "LESSON_LEDGER_FOLLOW_PROJECTIONS"


def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="server processes")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn).

    On first start, when the database has no admin token, one is created and printed
    once; on SQLite, without LESSON_LEDGER_KEY_FILE, the ledger's key file is created
    beside the database (`<database file>.keys.json`), and said so. The public key that
    checks the log's checkpoints is printed on every start.

    Example: lesson-ledger serve --workers 4 --database-url postgresql://postgres@127.0.0.1/ledger
    """
    with exit_codes():
        settings = Settings()
        url = database_url or settings.database_url
        database = Database.from_url(url)  # a wrong URL is one line, before anything starts
        # So are unsafe JWT settings, and the worker's when this server generates (SQLite):
        # they were a traceback in a log line after the banner.
        verifier = JwtVerifier.from_settings(settings.jwt)
        if verifier is not None:
            verifier.close()
        if settings.model_copy(update={"database_url": url}).runs_worker():
            check_generator(WorkerSettings())
        # A port in use too, once the settings are known good and before anything is
        # made (the key file, the first admin token shown once).
        _check_listening(host, port)
        # So is a missing or broken key file; the server processes find the one made here.
        keys = ledger_keys(settings, database)
        open_ledger(url).close()  # so are a wrong key and an unreachable database
        check_rights(database)  # and, with table creation off, a grant missing
        public_key = public_key_text(open_signer(database).public_key)
        os.environ[DATABASE_URL_SETTING] = url  # the worker processes read their settings
        first_admin = with_tokens(
            url,
            lambda tokens: (
                None if tokens.has_active_admin() else tokens.create("admin", name="local-admin")[1]
            ),
        )
    if keys.created:
        typer.echo(
            f"Created the ledger's key file (keep it, and back it up apart from the "
            f"database): {keys.path}"
        )
    if first_admin:
        typer.echo(f"Created the first admin token (shown once, keep it): {first_admin}")
    for setting in unused_on_sqlite(database):
        typer.echo(f"Not used: {setting} (the database is SQLite; it is PostgreSQL's)")
    typer.echo(f"Checkpoints are signed by the public key {public_key} (give it to auditors)")
    typer.echo(
        f"Serving lesson-ledger {VERSION} on http://{host}:{port} (database {redacted(url)})"
    )
    with _shared_metrics(workers), _followers(settings, database):
        uvicorn.run(
            "adapters.http.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
        )


def _check_listening(host: str, port: int) -> None:
    """Bind the address as uvicorn will, and let go: a host this machine does not have is
    bad input, a port in use one line (uvicorn said so in a log line after the ledger had
    started and the banner said it was serving)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        message = f"{host!r} is not an address to listen on: {error.strerror}"
        raise bad_input("--host", message) from None
    bound = False
    for family, kind, protocol, _, address in found:  # every one, as asyncio binds them
        try:
            probe = socket.socket(family, kind, protocol)
        except OSError:
            continue  # a family this machine lacks (IPv6 off): skipped, as asyncio does
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind(address)
            except OSError as error:
                raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        bound = True
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}: no address of it can be used")


@contextmanager
def _followers(settings: Settings, database: Database) -> Iterator[None]:
    """On PostgreSQL the projections' followers run in a process of their own, beside the
    request processes (adapters/followers.py); on SQLite in the server process."""
    if database.kind != "postgresql" or not settings.follow_projections:
        yield
        return
    os.environ[FOLLOW_PROJECTIONS_SETTING] = "false"  # the request processes inherit it
    try:
        with following_apart():
            yield
    finally:
        del os.environ[FOLLOW_PROJECTIONS_SETTING]


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several server processes count into one fresh directory, so that `/metrics` from
    any of them reports all (adapters/http/metrics.py); one uses its own registry. A
    directory the operator set is used as it is, and kept."""
    if workers == 1 or os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="lesson-ledger-metrics-") as folder:
        os.environ[MULTIPROCESS_DIR] = folder  # the worker processes inherit it
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]
