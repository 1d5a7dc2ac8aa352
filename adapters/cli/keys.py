"""`lesson-ledger keys init PATH`: the ledger's key file (adapters/keys/keyfile.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adapters.cli.options import err, exit_codes
from adapters.keys.keyfile import KEY_FILE_SETTING, added_keys

keys_app = typer.Typer(
    help="The ledger's keys: its key file, and rotating the key-encryption key.",
    no_args_is_help=True,
)


@keys_app.command("init")
def keys_init(
    path: Annotated[
        Path,
        typer.Argument(
            help=f"the key file (default: the one {KEY_FILE_SETTING} names)",
            metavar="PATH",
            envvar=KEY_FILE_SETTING,
            show_envvar=False,
        ),
    ],
) -> None:
    """Create the key file (mode 0600) or add the keys it lacks; existing keys never change.

    Every server process of one ledger must use the same file (on PostgreSQL, set
    LESSON_LEDGER_KEY_FILE to it). Keep it, and back it up apart from the database.

    Example: lesson-ledger keys init /etc/lesson-ledger/keys.json
    """
    with exit_codes():
        created, added = added_keys(path)
    if created:
        typer.echo(f"created {path} with the keys {', '.join(added)}")
    elif added:
        typer.echo(f"added the keys {', '.join(added)} to {path}")
    else:
        err.print(f"{path} already holds every key; nothing changed")
