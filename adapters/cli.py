"""The `lesson-ledger` command line (typer). Exit codes: 0 done, 1 rejected by the
domain, 2 bad input or usage, 3 infrastructure failure."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from adapters.cli_audit import audit_commands
from adapters.cli_import import import_commands
from adapters.cli_lessons import lessons_commands
from adapters.cli_projections import projections_app
from adapters.cli_worker import worker
from adapters.database import DATABASE_URL_SETTING, Database, DatabaseUrlError
from adapters.http.metrics import MULTIPROCESS_DIR
from adapters.settings import Settings
from adapters.sqlstore import SqlStore
from adapters.tokens import ROLES, TokenStore
from domain import InvalidLessonRequest, LedgerUnavailable
from domain.errors import DomainRejection

app = typer.Typer(
    name="lesson-ledger",
    help="An event-sourced ledger for AI-generated lessons.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(help="API bearer tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
app.add_typer(projections_app, name="projections")
app.add_typer(lessons_commands)  # request, batch, show, history
app.add_typer(audit_commands)  # report conflicts, export, verify-export
app.add_typer(import_commands)  # import
app.command("worker")(worker)

DONE, REJECTED, BAD_INPUT, INFRASTRUCTURE = 0, 1, 2, 3
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help=f"sqlite:///PATH or postgresql://...; default ${DATABASE_URL_SETTING}",
    ),
]
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn the ledger's errors into one line and the documented exit code."""
    try:
        yield
    except DatabaseUrlError as error:  # a wrong URL is bad input, not an outage
        err.print(f"[red]invalid:[/red] {error}", highlight=False)
        raise typer.Exit(BAD_INPUT) from None
    except LedgerUnavailable as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(INFRASTRUCTURE) from None
    except (InvalidLessonRequest, ValueError) as error:
        err.print(f"[red]invalid:[/red] {error}", highlight=False)
        raise typer.Exit(BAD_INPUT) from None
    except DomainRejection as error:
        err.print(f"[yellow]rejected:[/yellow] {error}", highlight=False)
        raise typer.Exit(REJECTED) from None


def with_tokens(database_url: str | None, work: Callable[[TokenStore], T]) -> T:
    sql = SqlStore(Database.from_url(database_url))
    try:
        return work(TokenStore(sql))
    finally:
        sql.close()


@app.callback()
def main() -> None:
    """An event-sourced ledger for AI-generated lessons."""


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="server processes")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn).

    On first start, when the database has no admin token, one is created and printed
    once. Example: lesson-ledger serve --workers 4 --database-url postgresql://postgres@127.0.0.1/ledger
    """
    import uvicorn

    with exit_codes():
        url = database_url or Settings().database_url
        Database.from_url(url)  # a wrong URL is one line, before anything starts
        os.environ[DATABASE_URL_SETTING] = url  # the worker processes read their settings
        first_admin = with_tokens(
            url,
            lambda tokens: (
                None if tokens.has_active_admin() else tokens.create("admin", name="local-admin")[1]
            ),
        )
    if first_admin:
        typer.echo(f"Created the first admin token (shown once, keep it): {first_admin}")
    typer.echo(f"Serving lesson-ledger on http://{host}:{port} (database {url})")
    with _shared_metrics(workers):
        uvicorn.run(
            "adapters.http.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
        )


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


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    provider_id: Annotated[
        str | None, typer.Option(help="the provider a provider token acts for")
    ] = None,
    name: Annotated[str | None, typer.Option(help="recorded as the actor of its commands")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it once.

    Example: lesson-ledger tokens create --role provider
    --provider-id 7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11 --name calendar-app
    """
    with exit_codes():
        token, text = with_tokens(database_url, lambda t: t.create(role, provider_id, name))
    typer.echo(text)
    err.print(f"token {token.token_id} ({token.role}, actor {token.name!r}): shown once, keep it")


@tokens_app.command("list")
def tokens_list(database_url: DatabaseUrl = None) -> None:
    """List tokens (never their secrets). Example: lesson-ledger tokens list"""
    with exit_codes():
        found = with_tokens(database_url, lambda tokens: tokens.list())
    table = Table("token id", "role", "provider", "name", "created", "revoked")
    for token in found:
        table.add_row(
            token.token_id,
            token.role,
            token.provider_id or "",
            token.name,
            token.created_at,
            token.revoked_at or "",
        )
    Console().print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a token by its id. Example: lesson-ledger tokens revoke 3fa85f64a1b2"""
    with exit_codes():
        revoked = with_tokens(database_url, lambda tokens: tokens.revoke(token_id))
    if not revoked:
        err.print(f"no active token has the id {token_id!r}")
        raise typer.Exit(BAD_INPUT)
    typer.echo(f"revoked {token_id}")


if __name__ == "__main__":
    app()
