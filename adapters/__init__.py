"""Adapters: database wiring, and (later) the HTTP API, the CLI and legacy import."""

from adapters.database import Database, DatabaseUrlError, open_ledger

__all__ = ["Database", "DatabaseUrlError", "open_ledger"]
