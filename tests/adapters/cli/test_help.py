"""Every command's help reads well at any terminal width: paragraphs wrap where the
terminal ends, never where the docstring's lines happened to end."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from adapters.cli import app

WIDTHS = (60, 100, 160)


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the tree, as the words that name it."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += command_paths(sub, (*path, name))
    return found


PATHS = command_paths(typer.main.get_command(app))


def help_paragraphs(output: str) -> list[list[str]]:
    """The prose of a help screen (above its first box), as paragraphs of lines."""
    prose = output.split("╭", 1)[0].splitlines()
    paragraphs: list[list[str]] = [[]]
    for line in prose:
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p and not p[0].lstrip().startswith("Usage:")]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "lesson-ledger")
def test_help_paragraphs_wrap_at_the_terminal_width(path: tuple[str, ...], width: int) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})

    assert result.exit_code == 0, result.output
    paragraphs = help_paragraphs(result.output)
    assert paragraphs, f"{' '.join(path)} --help has no description"
    for paragraph in paragraphs:
        for line, after in itertools.pairwise(paragraph):
            assert len(line) <= width
            # A line broken early leaves room for the next line's first word.
            next_word = after.split()[0]
            assert len(line) + 1 + len(next_word) > width - 2, (
                f"`{' '.join(path)} --help` at {width} columns breaks a line early:\n"
                f"{line!r}\n{after!r}"
            )
