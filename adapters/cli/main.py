"""The `lesson-ledger` command: its command groups, each in a module of its own."""

from __future__ import annotations

import typer

from adapters.cli.audit import audit_commands
from adapters.cli.imports import import_commands
from adapters.cli.lessons import lessons_commands
from adapters.cli.projections import projections_app
from adapters.cli.serve import serve
from adapters.cli.tokens import tokens_app
from adapters.cli.worker import worker

app = typer.Typer(
    name="lesson-ledger",
    help="An event-sourced ledger for AI-generated lessons.",
    no_args_is_help=True,
)
app.command()(serve)
app.add_typer(tokens_app, name="tokens")
app.add_typer(projections_app, name="projections")
app.add_typer(lessons_commands)  # request, batch, show, history
app.add_typer(audit_commands)  # report conflicts, export, verify-export
app.add_typer(import_commands)  # import
app.command("worker")(worker)


@app.callback()
def main() -> None:
    """An event-sourced ledger for AI-generated lessons."""
