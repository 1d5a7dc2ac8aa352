"""The release this code is: the version the installed package records (pyproject.toml's).

One source for `lesson-ledger --version`, the OpenAPI document, `GET /health` and the
`lesson_ledger_build_info` metric, so an operator asking any of them which release runs
gets the same answer.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "lesson-ledger"


def release_version() -> str:
    """The installed release's version; `0+unknown` for code run without installing it
    (an old release's tree on PYTHONPATH, say)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "0+unknown"


VERSION = release_version()
