"""`python -m adapters.cli`: the `lesson-ledger` command line."""

from adapters.cli.main import app

app()
