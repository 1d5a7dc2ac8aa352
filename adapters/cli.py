"""The `lesson-ledger` command line (typer). Exit codes: 0 done, 1 rejected by the
domain, 2 bad input or usage, 3 infrastructure failure."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lesson-ledger",
    help="An event-sourced ledger for AI-generated lessons.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """An event-sourced ledger for AI-generated lessons."""


@app.command()
def serve() -> None:
    """Serve the ledger over HTTP (comes with the HTTP API work; not yet built)."""
    typer.echo("lesson-ledger serve: the HTTP API is not built yet (see issue 4).", err=True)
    raise typer.Exit(2)


if __name__ == "__main__":
    app()
