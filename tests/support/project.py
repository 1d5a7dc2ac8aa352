"""The project's own declaration, as pyproject.toml holds it: what the release says of
itself is checked against it."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared_version() -> str:
    """pyproject.toml's `[project] version`."""
    version: str = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    return version
