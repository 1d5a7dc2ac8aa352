"""The `lesson-ledger` command: its command groups, each in a module of its own."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from adapters.cli.audit import audit_commands
from adapters.cli.db import db_app
from adapters.cli.imports import import_commands
from adapters.cli.keys import keys_app
from adapters.cli.lesson_changes import change_commands
from adapters.cli.lesson_list import list_commands
from adapters.cli.lessons import lessons_commands
from adapters.cli.options import flag
from adapters.cli.projections import projections_app
from adapters.cli.proofs import audit_app
from adapters.cli.serve import serve
from adapters.cli.students import retention_app, rotate_key, students_app
from adapters.cli.tokens import tokens_app
from adapters.cli.worker import worker
from adapters.release import VERSION

app = typer.Typer(
    name="lesson-ledger",
    help="An event-sourced ledger for AI-generated lessons.",
    no_args_is_help=True,
)
app.command()(serve)
app.add_typer(tokens_app, name="tokens")
app.add_typer(keys_app, name="keys")
app.add_typer(projections_app, name="projections")
app.add_typer(lessons_commands)  # request, batch, show, history
app.add_typer(change_commands)  # regenerate, cancel
app.add_typer(list_commands)  # lessons
app.add_typer(audit_commands)  # report conflicts, export, verify-export
app.add_typer(audit_app, name="audit")  # checkpoint, verify, public-key
app.add_typer(import_commands)  # import
app.command("worker")(worker)
app.add_typer(students_app, name="students")
app.add_typer(retention_app, name="retention")
keys_app.command("rotate")(rotate_key)  # keys init (adapters/cli/keys.py), keys rotate
app.add_typer(db_app, name="db")


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"lesson-ledger {VERSION}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        flag(
            "--version",
            help="Print the release's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """An event-sourced ledger for AI-generated lessons."""


def reflow(text: str | None) -> str | None:
    """A docstring as help: each paragraph one line, for the terminal to wrap at its width.
    (Typer keeps a docstring's line breaks, and the terminal then breaks its lines again.)"""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Every command's and group's help reflowed (see `reflow`), through the whole tree."""
    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None:
            command.help = reflow(command.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)
