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

    model_config = SettingsConfigDict(env_prefix="LESSON_LEDGER_", env_file=".env", extra="ignore")

    generator: GeneratorName = "template"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_timeout_seconds: float = Field(default=60.0, gt=0)
    """Seconds to wait for the answer (read timeout)."""
    openai_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    openai_max_tries: int = Field(default=4, ge=1, le=20)
    """Tries per attempt: the first call and its retries (429, 5xx, timeouts, connection
    errors, malformed output)."""
    openai_backoff_seconds: float = Field(default=1.0, ge=0)
    """The first retry waits up to this long, doubling each time (full jitter)."""
    openai_max_backoff_seconds: float = Field(default=30.0, ge=0)
    openai_temperature: float = Field(default=0.4, ge=0, le=2)
    openai_json_mode: bool = True
    """Send `response_format: {"type": "json_object"}` (some servers do not support it)."""
