"""The layer contracts (.importlinter, run by `nox -s lint`) hold for edgesr as it is, and fail when an
upward import or a cycle is added, whether the import is at the top of a module or inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")  # import-linter, in the `test` extra


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    shutil.copytree(ROOT / "edgesr", tmp_path / "edgesr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_edgesr_keeps_its_layers(tree: Path) -> None:
    out = _lint(tree)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    "module, code, broken",
    [
        ("models/plain.py", "import edgesr.export\n", "edgesr.models is not allowed to import edgesr.export"),
        (  # hidden inside a function, as cycles used to be
            "train/objectives.py",
            "\ndef _late():\n    from edgesr.quant import ptq  # noqa: F401\n",
            "edgesr.train is not allowed to import edgesr.quant",
        ),
        (
            "data/pairs.py",
            "\ndef _late():\n    from edgesr.data import datasets  # noqa: F401\n",
            "No cycles are allowed in edgesr.data",
        ),
    ],
)
def test_an_upward_import_or_a_cycle_breaks_a_contract(
    tree: Path, module: str, code: str, broken: str
) -> None:
    with (tree / "edgesr" / module).open("a") as f:
        f.write(code)
    out = _lint(tree)
    assert out.returncode != 0
    assert broken in out.stdout, out.stdout[-3000:]
