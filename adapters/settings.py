"""Settings, from the environment (prefix LESSON_LEDGER_) or a `.env` file."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adapters.auth.settings import JwtSettings
from adapters.storage.database import DEFAULT_DATABASE_URL

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ORIGIN = re.compile(r"https?://[^/\s?#]+")


class Settings(BaseSettings):
    """The ledger's settings; each can be set as LESSON_LEDGER_<NAME>."""

    # allow_inf_nan: "inf" would pass every lower bound (a session that never ends, a
    # wait that never does) and "nan" means nothing.
    model_config = SettingsConfigDict(
        env_prefix="LESSON_LEDGER_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    min_position_wait_seconds: float = Field(default=5.0, ge=0, le=300)
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."""
    follow_projections: bool = True
    retention_days: int | None = Field(default=None, ge=1)
    """Erase the students' data of lessons dated more than this many days ago, daily (the
    server does it); none: keep it until erased. At least 1: 0 would erase every lesson
    before today, and a negative number the coming ones."""
    checkpoint_every_seconds: float | None = Field(default=None, gt=0, le=31 * 86400)
    """Sign a checkpoint of the tamper-evident log this often when it has grown (the
    server's active tree follower does it); none: only when asked."""
    token_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a server process remembers a token it found valid: a token revoked by
    another process (`lesson-ledger tokens revoke`) is refused within this time; 0
    checks the database on every request."""
    embedded_worker: Literal["auto", "on", "off"] = "auto"
    """Generate lessons inside the server: `auto` does on the embedded SQLite default
    (so `make run` generates without more set-up); on PostgreSQL run `lesson-ledger
    worker` processes instead."""
    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins (`https://calendar.example.org`, comma-separated) whose browser pages may
    call the API and its event stream with a bearer token; none by default. Never with
    cookies: the pages' session is not accepted by the API's endpoints."""
    session_hours: float = Field(default=8.0, gt=0, le=24 * 366)
    """How long a signed-in page session lasts (the cookie and the session alike), at most
    a year."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        for origin in value if isinstance(value, list) else []:
            # A browser sends scheme://host[:port]: anything else would match no page.
            if origin != "*" and not _ORIGIN.fullmatch(str(origin)):
                raise ValueError(
                    f"{origin!r} is not an origin such as https://calendar.example.org"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return value.upper()

    key_file: str | None = None
    """The ledger's key file (adapters/keys/keyfile.py): required on PostgreSQL; on SQLite
    by default `<database file>.keys.json`, made on first start."""
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    """JWT bearer tokens of the product's sign-in (LESSON_LEDGER_JWT_*): none by default."""

    def runs_worker(self) -> bool:
        if self.embedded_worker == "auto":
            return self.database_url.startswith("sqlite:")
        return self.embedded_worker == "on"
