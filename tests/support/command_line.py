"""Driving `lesson-ledger` as a user would: in-process through typer's CliRunner (fast),
or as a real subprocess where the process itself is under test (exit status, stderr,
memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from adapters.cli import app

LESSON_LEDGER = Path(sys.executable).with_name("lesson-ledger")
# Wide enough that rich tables are not cut, so tests can read them as people do.
WIDE = {"COLUMNS": "250", "NO_COLOR": "1"}


@dataclass(frozen=True)
class Ran:
    """A finished command: its exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


ANY_PORT = ("--port", "0")
"""For a `serve` that must stop before it serves: a port of the system's choosing, so a
server already on the default port (`make run` beside `make test`) cannot stop it first."""


def cli(
    *args: str, database_url: str | None = None, stdin: str | None = None, columns: int = 250
) -> Ran:
    """Run `lesson-ledger ARGS` in this process (with `--database-url` when given), in a
    terminal `columns` wide."""
    argv = [*args, *(("--database-url", database_url) if database_url else ())]
    env = {**WIDE, "COLUMNS": str(columns)}
    result = CliRunner().invoke(app, argv, input=stdin, env=env, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def cli_process(*args: str, timeout: float = 120) -> Ran:
    """Run `lesson-ledger ARGS` as its own process."""
    done = subprocess.run(
        [str(LESSON_LEDGER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **WIDE},
    )
    return Ran(done.returncode, done.stdout, done.stderr)
