"""The `lesson-ledger` command line (typer): one module per command group."""

from adapters.cli.main import app

__all__ = ["app"]
