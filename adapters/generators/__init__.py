"""The generators: `template` (offline, deterministic, the default) and `openai` (any
OpenAI-compatible chat completions endpoint), chosen by the settings."""

from __future__ import annotations

from adapters.generators.limits import RateLimiter
from adapters.generators.openai_compatible import OpenAIGenerator, checked_endpoint
from adapters.generators.settings import GeneratorConfigError, GeneratorSettings
from adapters.generators.template import TemplateGenerator
from projections.generation.port import LessonGenerator

__all__ = ["GeneratorConfigError", "GeneratorSettings", "check_generator", "make_generator"]


def make_generator(
    settings: GeneratorSettings, *, limiter: RateLimiter | None = None
) -> LessonGenerator:
    """The generator the settings name (its calls within `limiter`'s limits)."""
    if settings.generator == "openai":
        return OpenAIGenerator(settings, limiter=limiter)
    return TemplateGenerator()


def check_generator(settings: GeneratorSettings) -> None:
    """GeneratorConfigError, one line, when the settings cannot make their generator
    (checked before a server that generates starts, as `lesson-ledger worker` is)."""
    if settings.generator == "openai":
        checked_endpoint(settings)
