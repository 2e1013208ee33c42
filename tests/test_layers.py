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


def test_a_name_taken_through_the_package_is_an_arrow(tmp_path):
    """`from features_store import FeatureStore` in a ground-floor module reaches the store through the
    package's lazy exports (importlib at run time): the contract must see that arrow too."""
    root = _copy(tmp_path)
    with open(root / "features_store" / "hints.py", "a") as f:
        f.write("\n\ndef _up():\n    from features_store import FeatureStore  # noqa: F401\n")
    res = _lint_imports(root)
    assert res.returncode != 0
    assert "features_store.hints is not allowed to import features_store.store" in res.stdout


def test_every_lazy_export_is_declared_for_the_contract():
    """The TYPE_CHECKING block of features_store/__init__.py names every lazy export from its module (an
    export missing there is an arrow import-linter cannot see)."""
    import ast

    import features_store

    tree = ast.parse((REPO / "features_store" / "__init__.py").read_text())
    declared = {alias.name: node.module for block in tree.body if isinstance(block, ast.If)
                for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert declared == features_store._EXPORTS


#: where a room imports a module named at run time (not a room module spelled as a literal): the registry's
#: extractor modules, user plugins, the package's lazy exports, the scikit-learn classes a bundle trusts
DYNAMIC_IMPORT_SITES = {("extractors/registry.py", "extractor_class"), ("extractors/runner.py", "load_plugins"),
                        ("features_store/__init__.py", "__getattr__"), ("regressors/bundle.py", "trusted_types")}


def _dynamic_imports(root: Path) -> list[str]:
    """importlib.import_module/__import__ calls import-linter cannot see: one naming a room module as a
    literal (write an import statement), or any other outside DYNAMIC_IMPORT_SITES."""
    import ast

    bad = []
    for room in ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text())
            funcs = [(f, n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                     for n in ast.walk(f)]
            owner = {id(n): f.name for f, n in funcs}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if name not in ("import_module", "__import__") or not node.args:
                    continue
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if arg.value.split(".")[0] in ROOMS or arg.value.startswith("."):
                        bad.append(f"{rel}:{node.lineno} imports {arg.value!r} by name: use an import statement")
                elif (rel, owner.get(id(node))) not in DYNAMIC_IMPORT_SITES:
                    bad.append(f"{rel}:{node.lineno} imports a module named at run time (add the site to "
                               "DYNAMIC_IMPORT_SITES only if it cannot reach a higher floor)")
    return bad


def test_no_import_hides_from_the_contract():
    assert _dynamic_imports(REPO) == []


def test_an_import_by_name_is_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "features_store" / "item.py", "a") as f:
        f.write("\n\ndef _up():\n    import importlib\n    return importlib.import_module('extractors.base')\n")
    with open(root / "regressors" / "heads.py", "a") as f:
        f.write("\n\ndef _up(name):\n    return __import__(name)\n")
    bad = _dynamic_imports(root)
    assert any(b.startswith("features_store/item.py") and "'extractors.base'" in b for b in bad)
    assert any(b.startswith("regressors/heads.py") for b in bad)
