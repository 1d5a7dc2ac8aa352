"""`lesson-ledger tokens create | list | revoke`: the API's bearer tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from adapters.cli.options import REJECTED, DatabaseUrl, err, exit_codes, print_table
from adapters.storage.database import Database
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import ROLES, TokenStore

T = TypeVar("T")
tokens_app = typer.Typer(help="API bearer tokens: create, list, revoke.", no_args_is_help=True)


def with_tokens(database_url: str | None, work: Callable[[TokenStore], T]) -> T:
    """`work` done with the token store of the database, closed afterwards."""
    sql = SqlStore(Database.from_url(database_url))
    try:
        return work(TokenStore(sql))
    finally:
        sql.close()


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    provider_id: Annotated[
        str | None,
        typer.Option(
            "--provider-id",
            "--provider",  # as `request`, `show` and `history` spell it
            help="the provider a provider token acts for",
        ),
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
    """List tokens (never their secrets).

    Example: lesson-ledger tokens list
    """
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
    print_table(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a token by its id. Exit 1 when no active token has it (an unknown id, or
    one revoked before), as `students erase` of an unknown student.

    Example: lesson-ledger tokens revoke 3fa85f64a1b2
    """
    with exit_codes():
        revoked = with_tokens(database_url, lambda tokens: tokens.revoke(token_id))
    if not revoked:
        err.print(f"[yellow]not found:[/yellow] no active token has the id {token_id!r}")
        raise typer.Exit(REJECTED)
    typer.echo(f"revoked {token_id}")
