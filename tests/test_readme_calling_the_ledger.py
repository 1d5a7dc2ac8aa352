"""The README's "Calling the ledger from your product" example, run as written: the server
started with its settings (`lesson-ledger serve`), then its shell lines (a JWT made on the
spot, the calendar's single-lesson call with curl) against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.served import serving_process

SECTION = "## Calling the ledger from your product"


def shell_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def test_the_local_jwt_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("curl") is None:
        pytest.fail("the README's example needs curl")
    serve = next(block for block in shell_blocks() if "make run" in block)
    call = next(block for block in shell_blocks() if "curl" in block)
    for name, value in re.findall(r"^export (\w+)=(\S+)", serve, flags=re.MULTILINE):
        monkeypatch.setenv(name, value)
    expected = re.search(r"^# (\d{3}) (\{.*\})$", call, flags=re.MULTILINE)
    assert expected is not None

    with serving_process(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "log") as (url, _):
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", call.replace("http://127.0.0.1:8000", url)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
        )

    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert expected.group(1) == "201"
    shown = dict(re.findall(r'"(\w+)":"?(\w+)"?', expected.group(2)))
    assert (answer["outcome"], str(answer["attempt"])) == (shown["outcome"], shown["attempt"])
