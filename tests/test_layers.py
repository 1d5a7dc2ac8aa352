"""The import-rule checker (tests/layers.py), run on small trees built for each test."""

import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from tests.support.layers import main

REPOSITORY = Path(__file__).resolve().parents[1]

CLEAN = {
    "domain/__init__.py": "from domain.keys import Key\n",
    "domain/keys.py": "from . import errors\n\nKey = str\n",
    "domain/errors.py": "class LedgerError(Exception): ...\n",
    "projections/__init__.py": "",
    "projections/view.py": """\
        from typing import TYPE_CHECKING

        from domain import Key

        from .port import Port

        if TYPE_CHECKING:
            from domain.errors import LedgerError
        """,
    "projections/port.py": "from domain.keys import Key\n\nPort = Key\n",
    "adapters/__init__.py": "from adapters.db import open_it\n",
    "adapters/db.py": """\
        import domain.keys
        from adapters import util
        from projections.view import Key


        def open_it() -> None:
            from projections import port
        """,
    "adapters/util.py": "",
}


def build(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(source))


def check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["--root", str(root)])
    return status, capsys.readouterr().out


def test_a_clean_tree_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, CLEAN)

    status, out = check(tmp_path, capsys)

    assert (status, out) == (0, "layers: 9 modules, 0 outward imports, 0 cycles\n")


def test_an_outward_import_inside_a_domain_function_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domain_x = '''\
        """Loads something."""


        def load() -> None:
            from adapters.db import open_it

            open_it()
        '''
    build(tmp_path, {**CLEAN, "domain/x.py": domain_x})

    status, out = check(tmp_path, capsys)

    assert status == 1
    assert out.splitlines()[:-1] == [
        "domain/x.py:5: domain.x imports adapters.db (domain may import only domain)"
    ]


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("from adapters import db\n", 1),
        ("import adapters.db as db\n", 1),
        ("class Follower:\n    def run(self) -> None:\n        from adapters import db\n", 3),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adapters.db import x\n", 3),
        ("try:\n    import adapters.db\nexcept ImportError:\n    pass\n", 2),
    ],
    ids=["module level", "import as", "method", "TYPE_CHECKING", "try/except"],
)
def test_projections_importing_adapters_fails(
    source: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path, {**CLEAN, "projections/follower.py": source})

    status, out = check(tmp_path, capsys)

    assert status == 1
    assert out.splitlines()[:-1] == [
        f"projections/follower.py:{line}: projections.follower imports adapters.db"
        " (projections may import only domain and projections)"
    ]
    assert out.splitlines()[-1] == "layers: 10 modules, 1 outward import, 0 cycles"


def test_a_cycle_inside_adapters_fails_and_names_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cycle = {
        "adapters/a.py": "from adapters import b\n",
        "adapters/b.py": "def later() -> None:\n    from adapters.a import thing\n",
    }
    build(tmp_path, {**CLEAN, **cycle})

    status, out = check(tmp_path, capsys)

    assert status == 1
    assert out.splitlines() == [
        "import cycle: adapters/a.py -> adapters/b.py (line 1) -> adapters/a.py (line 2)",
        "layers: 11 modules, 0 outward imports, 1 cycle",
    ]


def test_a_longer_cycle_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cycle = {
        "adapters/a.py": "import adapters.b\n",
        "adapters/b.py": "import adapters.c\nimport adapters.a\n",
        "adapters/c.py": "\n\nfrom .a import thing\n",
    }
    build(tmp_path, {**CLEAN, **cycle})

    status, out = check(tmp_path, capsys)

    assert status == 1
    assert out.splitlines() == [
        "import cycle: adapters/a.py -> adapters/b.py (line 1) -> adapters/a.py (line 2);"
        " also in this cycle: adapters/c.py",
        "layers: 12 modules, 0 outward imports, 1 cycle",
    ]


def test_a_relative_import_out_of_domain_is_resolved_and_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path, {**CLEAN, "domain/x.py": "from ..adapters import db\n"})

    status, out = check(tmp_path, capsys)

    assert status == 1
    assert out.splitlines()[:-1] == [
        "domain/x.py:1: domain.x imports adapters.db (domain may import only domain)"
    ]


def test_it_runs_as_a_module_from_the_repository_root(tmp_path: Path) -> None:
    build(tmp_path, {**CLEAN, "domain/x.py": "import projections\n"})

    run = subprocess.run(
        [sys.executable, "-m", "tests.support.layers", "--root", str(tmp_path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 1
    assert "domain/x.py:1: domain.x imports projections (domain may import only domain)" in (
        run.stdout
    )
