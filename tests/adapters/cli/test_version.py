"""`lesson-ledger --version`: the release the installed command is, as pyproject.toml
declares it (the HTTP API's `/health`, OpenAPI document and build-info metric say the
same: tests/adapters/http/test_http.py)."""

from __future__ import annotations

from tests.support.command_line import cli_process
from tests.support.project import declared_version


def test_version_names_the_declared_release() -> None:
    ran = cli_process("--version")

    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == f"lesson-ledger {declared_version()}\n"
    assert ran.stderr == ""
