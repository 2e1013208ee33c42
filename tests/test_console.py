"""Issue 23 point 3: what `pip install .` installs runs every job, or says in one line which extra a part
needs. The full check (wheel built, installed into a fresh environment, every job run from outside the
checkout) is tools/check_wheel.py, run by CI after the tests; these are its fast halves."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from features_store.console import EXTRAS, OPTIONAL_MODULES, missing_extra, run_main

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("aigcq", "extractors", "features_store", "regressors", "experiments")  # what the wheel installs


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return ({_name(d) for d in project["dependencies"]},
            {extra: {_name(d) for d in deps} for extra, deps in project["optional-dependencies"].items()})


def _requires_closure(names: set[str]) -> set[str]:
    """The distributions ``names`` install (themselves and what they require, without extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level modules the installed packages import (at the top or inside functions) -> files."""
    out: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - set(PACKAGES):
                    out.setdefault(top, []).append(str(f.relative_to(REPO)))
    return out


def test_every_import_comes_with_the_plain_install_or_its_extra_is_named():
    """Before: experiments/demo_data.py imports skimage, which only the `reference` extra installed, so
    `pip install .` then `aigcq demo` ended in "ModuleNotFoundError: No module named 'skimage'"."""
    base, extras = _pyproject()
    installed = _requires_closure(base)
    dists_of = metadata.packages_distributions()
    wrong = []
    for module, files in sorted(_third_party_imports().items()):
        dists = {d.lower().replace("_", "-") for d in dists_of.get(module, [])}
        if dists & installed:
            continue
        if module not in OPTIONAL_MODULES:
            wrong.append(f"{module} ({files[0]}): not installed by `pip install .` and not in "
                         "features_store.console.OPTIONAL_MODULES")
            continue
        dist, extra = OPTIONAL_MODULES[module]
        if _name(dist) not in extras.get(extra, set()):
            wrong.append(f"{module}: console says extra {extra!r}, pyproject.toml's {extra!r} lacks {dist}")
    assert not wrong, "\n".join(wrong)


def test_the_extras_named_in_messages_are_pyprojects():
    _, extras = _pyproject()
    for extra, dists in EXTRAS.items():
        assert {_name(d) for d in dists} <= extras[extra], extra
    for module, (dist, extra) in OPTIONAL_MODULES.items():
        assert dist in EXTRAS[extra], module


def test_missing_extra_names_the_extra_only_for_optional_packages():
    line = missing_extra(ModuleNotFoundError("No module named 'open_clip'", name="open_clip"))
    assert "pip install 'aigc-quality[clip]'" in line and "open_clip_torch" in line
    assert missing_extra(ModuleNotFoundError("No module named 'h5py'", name="h5py")) is None  # a broken install
    assert missing_extra(ValueError("x")) is None

    def needs_h5py(argv):
        raise ModuleNotFoundError("No module named 'h5py'", name="h5py")

    with pytest.raises(ModuleNotFoundError):  # its traceback is the useful report
        run_main(needs_h5py, [])


def test_the_clip_extractor_without_open_clip_is_one_line(tmp_path, monkeypatch, capsys):
    """Before: `aigcq features --extractors nss,clip` without open_clip_torch: nss computed, then a
    ModuleNotFoundError traceback."""
    from aigcq.cli import main

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    pd.DataFrame({"name": ["a.png"], "prompt": ["a cat"], "mos": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    for name in [m for m in sys.modules if m == "open_clip" or m.startswith("open_clip.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now fails as if not installed
    rc = main(["features", "--track", "image", "--data", str(tmp_path / "t.csv"), "--extractors", "nss,clip",
               "--store", str(tmp_path / "s.h5"), "--no-progress", "--workers", "0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "pip install 'aigc-quality[clip]'" in err[0], err
    assert not (tmp_path / "s.h5").exists()  # refused before any work
