"""The README's examples, extracted from the README and run, so the documented API stays
true. Every `python` and `sh` block carries a marker on the line before it that says how
it is checked; a block without one fails this test, so none is left out by accident:

- `<!-- example: python -->`: run in a fresh folder; a line ending in a comment that is a
  Python literal (`result.outcome   # "accepted"`) asserts that its expression equals it;
- `<!-- example: shell -->`: run by bash (`set -e`) in a fresh folder, `lesson-ledger`
  on the PATH and the SQLite default database there;
- `<!-- example: http -->`: run by bash against a server of its own, `$TOKEN` an admin
  token, `http://127.0.0.1:8000` its address; any answer of 400 or more fails it;
- `<!-- example: cli-syntax -->`: each `lesson-ledger` line is checked, not run: the
  command exists and takes every option the line gives (for examples that need another
  system, or run until stopped);
- `<!-- example: not run: why -->`: left out, with the reason.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from adapters.cli import app
from tests.support import ROOT
from tests.support.served import served

README = ROOT / "README.md"
MARKER = re.compile(r"<!-- example: (python|shell|http|cli-syntax|not run)(?:: (.*?))? -->")
KINDS = {"python", "shell", "http", "cli-syntax", "not run"}
LOCAL_ADDRESS = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README, with its marker."""

    line: int
    language: str
    kind: str | None
    note: str
    code: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language}, {self.kind})"


def blocks(text: str) -> list[Block]:
    """Every fenced block, with the marker found on the two lines before it."""
    found: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = next(
            (m for m in (MARKER.search(line) for line in lines[max(0, index - 2) : index]) if m),
            None,
        )
        kind = marker.group(1) if marker else None
        found.append(
            Block(
                line=index + 1,
                language=fence.group(1),
                kind=kind,
                note=(marker.group(2) or "") if marker else "",
                code="\n".join(lines[index + 1 : end]),
            )
        )
        index = end + 1
    return found


BLOCKS = [b for b in blocks(README.read_text()) if b.language in ("python", "sh")]


def test_every_example_says_how_it_is_checked() -> None:
    unmarked = [str(b) for b in BLOCKS if b.kind not in KINDS]
    assert not unmarked, f"README blocks without an example marker: {unmarked}"
    unexplained = [str(b) for b in BLOCKS if b.kind == "not run" and not b.note.strip()]
    assert not unexplained, f"README blocks left out without a reason: {unexplained}"


def _of(kind: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind == kind]


@pytest.mark.parametrize("block", _of("python"), ids=str)
def test_python_examples_run_and_show_what_they_say(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(_with_assertions(block.code), str(block), "exec"), namespace)
    closing = namespace.get("ledger")
    if closing is not None:
        closing.close()


def _with_assertions(code: str) -> str:
    """The code, each `expression   # literal` line turned into `assert expression == literal`."""
    tree = ast.parse(code)
    lines = code.splitlines()
    for statement in ast.walk(tree):
        if not isinstance(statement, ast.Expr) or statement.lineno != statement.end_lineno:
            continue
        line = lines[statement.lineno - 1]
        comment = line[statement.end_col_offset :].strip()
        if not comment.startswith("#"):
            continue
        try:
            expected = ast.literal_eval(comment[1:].strip())
        except (ValueError, SyntaxError):
            continue  # prose, not a value
        indent = line[: statement.col_offset]
        expression = ast.get_source_segment(code, statement)
        lines[statement.lineno - 1] = (
            f"{indent}assert ({expression}) == {expected!r}, ({expression}, {expected!r})"
        )
    return "\n".join(lines)


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _environment(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LESSON_LEDGER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LESSON_LEDGER_DATABASE_URL"] = "sqlite:///./lesson-ledger.db"
    env["COLUMNS"] = "200"
    return env


@pytest.mark.parametrize("block", _of("shell"), ids=str)
def test_shell_examples_run(block: Block, tmp_path: Path) -> None:
    ran = _bash(block.code, tmp_path, _environment(tmp_path))
    assert ran.returncode == 0, f"{block}:\n{ran.stdout}\n{ran.stderr}"


@pytest.mark.parametrize("block", _of("http"), ids=str)
def test_http_examples_run_against_a_server(block: Block, tmp_path: Path) -> None:
    with served(f"sqlite:///{tmp_path / 'lesson-ledger.db'}") as api:
        token = api.auth("admin")["Authorization"].removeprefix("Bearer ")
        script = re.sub(r"^TOKEN=\S+", f"TOKEN={token}", block.code, flags=re.M)
        script = script.replace(LOCAL_ADDRESS, api.base_url)
        # Every answer of 400 or more fails the example (the body is still shown).
        script = 'curl() { command curl --fail-with-body "$@"; echo; }\n' + script
        ran = _bash(script, tmp_path, _environment(tmp_path))
    assert ran.returncode == 0, f"{block}:\n{ran.stdout}\n{ran.stderr}"


@pytest.mark.parametrize("block", _of("cli-syntax"), ids=str)
def test_command_lines_name_real_commands_and_options(block: Block) -> None:
    root = typer.main.get_command(app)
    for line in _command_lines(block.code):
        words = shlex.split(line, comments=True)[1:]
        command: Any = root
        while words and words[0] in getattr(command, "commands", {}):
            command = command.commands[words.pop(0)]
        assert not hasattr(command, "commands"), f"{block}: {line!r} names no command"
        known = {name for param in command.params for name in param.opts}
        used = {word.split("=")[0] for word in words if word.startswith("--")}
        assert used <= known, f"{block}: {line!r} uses unknown options {sorted(used - known)}"


def _command_lines(code: str) -> list[str]:
    """The `lesson-ledger` commands of a block, continuation lines joined."""
    joined = code.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip().startswith("lesson-ledger")
    ]
