"""The house holds: import-linter checks the layer contract in pyproject.toml ([tool.importlinter]).

Rooms import only the rooms below them (aigcq > experiments > regressors > extractors >
features_store), no two modules of a room import each other in a circle, and each room's
modules read bottom-up (docs/architecture.md). Imports inside functions count.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("features_store", "extractors", "regressors", "experiments", "aigcq")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    # the packages of `root` win over any installed copy (PYTHONPATH), and the contract is root's pyproject
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_layer_contract_holds():
    res = _lint_imports(REPO)
    assert res.returncode == 0, f"import contract broken (run `lint-imports`):\n{res.stdout[-6000:]}{res.stderr[-2000:]}"
    assert "0 broken" in res.stdout


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    for room in ROOMS:
        shutil.copytree(REPO / room, root / room, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", "recipes"))
    return root


def test_an_arrow_up_or_a_circle_is_caught(tmp_path):
    """The check is not vacuous: the contract breaks on a lazy import from the ground floor up, and on a
    circle inside a room (the shapes issue 23 found)."""
    root = _copy(tmp_path)
    with open(root / "features_store" / "hints.py", "a") as f:
        f.write("\n\ndef _up():\n    from extractors import base  # noqa: F401\n")
    with open(root / "regressors" / "tuning.py", "a") as f:
        f.write("\n\ndef _circle():\n    from .stacking import StackConfig  # noqa: F401\n")
    res = _lint_imports(root)
    assert res.returncode != 0
    assert "features_store is not allowed to import extractors" in res.stdout
    assert "features_store.hints -> extractors.base" in res.stdout
    assert "No cycles are allowed in regressors" in res.stdout
