"""A real headless Chromium for the browser tests: Debian's `chromium`, driven by
Playwright (no browser download). Without one the tests skip with one line; with CI=true
a missing browser fails the run instead (`.ci/run` installs it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.stores import IN_CI

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
UPDATE_SCREENSHOTS = "LESSON_LEDGER_UPDATE_SCREENSHOTS"
"""Set to 1 to have the browser tests write the README's screenshots (docs/screenshots/)."""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> str:
    """The browser's path; skip (fail under CI=true) when there is none."""
    problem = None
    path = chromium_path()
    if path is None:
        problem = "no browser: install Debian's chromium (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "no browser driver: the playwright package is not installed"
    if problem is None:
        assert path is not None
        return path
    if IN_CI:
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


@contextmanager
def launched(path: str) -> Iterator[Any]:
    """A headless Chromium (as root it needs --no-sandbox)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """A PNG of the whole page: in the test's folder, and in docs/screenshots when asked."""
    target = tmp_path / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / f"{name}.png")
    return target
