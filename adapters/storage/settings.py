"""Where the ledger's data lives, from the environment (prefix LESSON_LEDGER_) or `.env`:
the main URL, the optional direct and read URLs, and how each is used.

`Database.from_url` (adapters/storage/database.py) reads them; every process that opens
the ledger (server, worker, `projections follow`, the CLI) sees the same settings.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./lesson-ledger.db"


class DatabaseSettings(BaseSettings):
    """The database settings; each can be set as LESSON_LEDGER_<NAME>."""

    # allow_inf_nan: "inf" would pass every lower bound (a session that never ends, a
    # wait that never does) and "nan" means nothing.
    model_config = SettingsConfigDict(
        env_prefix="LESSON_LEDGER_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    database_url: str = DEFAULT_DATABASE_URL
    """Commands, the follower and the worker; may be a transaction-mode pooler's URL."""
    direct_database_url: str | None = None
    """Optional: a session on the same database (no transaction pooler between) for
    LISTEN, the runners' advisory locks and table creation."""
    read_database_url: str | None = None
    """Optional: a streaming replica of the same database for the read model's queries
    and lesson histories."""
    create_tables: bool = True
    """Create missing tables on start; off: a missing table is one line at start (run
    `lesson-ledger db migrate` as the migration role)."""
    replica_max_lag_seconds: float = Field(default=5.0, gt=0)
    """A replica further behind than this (or down) is not read; reads go to the primary."""
    lease_seconds: float = Field(default=10.0, ge=0.5, le=600)
    """Without a session (pooled URL, no direct URL): how long a runner's lease lasts
    unrenewed, i.e. how long a dead runner's work waits before another takes over."""
    poll_seconds: float = Field(default=0.25, gt=0, le=60)
    """Without LISTEN (pooled URL, no direct URL): how often an idle follower looks at
    the log."""

    @field_validator("direct_database_url", "read_database_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
