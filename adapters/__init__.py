"""Adapters: the ledger on its databases (SQLite, PostgreSQL), the HTTP API, the command
line, the generators and the legacy import. Each depends on the domain, never the
reverse."""

from adapters.eventstore import open_ledger
from adapters.storage.database import Database, DatabaseUrlError

__all__ = ["Database", "DatabaseUrlError", "open_ledger"]
