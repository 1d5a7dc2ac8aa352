"""Which generator to use, and how to reach an OpenAI-compatible endpoint: the settings
(LESSON_LEDGER_GENERATOR, LESSON_LEDGER_OPENAI_...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GeneratorName = Literal["template", "openai"]
GENERATORS: tuple[str, ...] = ("template", "openai")


class GeneratorConfigError(ValueError):
    """The settings do not describe a usable generator (e.g. openai without a key)."""


# Settings.


class GeneratorSettings(BaseSettings):
    """Which generator, and how to reach an OpenAI-compatible endpoint.

    Each is set as LESSON_LEDGER_<NAME>, e.g. LESSON_LEDGER_GENERATOR=openai,
    LESSON_LEDGER_OPENAI_BASE_URL=http://localhost:11434/v1.
    """

    # allow_inf_nan: "inf" would pass every lower bound (a session that never ends, a
    # wait that never does) and "nan" means nothing.
    model_config = SettingsConfigDict(
        env_prefix="LESSON_LEDGER_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    generator: GeneratorName = "template"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_timeout_seconds: float = Field(default=60.0, gt=0)
    """Seconds to wait for the answer (read timeout)."""
    openai_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    openai_max_tries: int = Field(default=4, ge=1, le=20)
    """Calls per attempt at most: the first and its retries (the openai package's for 408,
    409, 429, 5xx, timeouts and connection errors, with its backoff and Retry-After; ours
    for malformed output)."""
    openai_temperature: float = Field(default=0.4, ge=0, le=2)
    openai_structured_outputs: bool = True
    """Send the lesson's JSON schema, strict (`response_format: json_schema`), so the model
    answers in its shape; turn off for endpoints that refuse it."""
    openai_json_mode: bool = True
    """Without structured outputs: send `response_format: {"type": "json_object"}` (some
    servers support neither)."""
    openai_requests_per_minute: int | None = Field(default=None, ge=1)
    """At most this many calls in any minute, across every worker process (PostgreSQL
    holds the count; SQLite's one process holds it in memory). None: no limit."""
    openai_tokens_per_minute: int | None = Field(default=None, ge=1)
    """At most this many tokens in any minute, as for requests: each call counts its
    estimate until its answer says what it used."""
    openai_rate_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    """The window the per-minute limits are counted over (60; shorter in tests)."""
    openai_estimated_completion_tokens: int = Field(default=1500, ge=0)
    """What an answer is expected to cost, counted before the call (the prompt's share is
    estimated from its length)."""
