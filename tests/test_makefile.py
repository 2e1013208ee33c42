"""The Makefile: values are arguments, never shell code; paths with spaces; ON_INVALID; reinstall by content hash."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make(*args, cwd=REPO, **env):
    e = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "Makefile"), *args,
                           f"PY={sys.executable}"], cwd=cwd, env=e, capture_output=True, text=True, timeout=600)


def _table(folder: Path, ids=("a", "b", "c")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": list(ids), "prompt": ["p"] * len(ids), "generator": ["g1", "g2", "g1"][:len(ids)],
                  "mos": [1.0, 2.0, 3.0][:len(ids)]}).to_csv(folder / "labels.csv", index=False)
    y = folder / "data set.yaml"
    y.write_text("adapter: table\nlabels: labels.csv\nroot: .\n"
                 "columns: {item_id: item_id, prompt: prompt, generator: generator, mos: mos}\n")
    return y


def test_a_value_is_never_run_as_shell_code(tmp_path):
    proc = _make("describe", "DATA=x.yaml; echo INJECTED > injected.txt", cwd=tmp_path)
    assert not (tmp_path / "injected.txt").exists() and "INJECTED" not in proc.stdout
    assert proc.returncode != 0 and "x.yaml; echo INJECTED" in proc.stderr  # one (missing) dataset path
    proc = _make("describe", "DATA=$(touch made.txt)`touch made2.txt`", cwd=tmp_path)
    assert not (tmp_path / "made.txt").exists() and not (tmp_path / "made2.txt").exists()


def test_paths_with_spaces_work(tmp_path):
    y = _table(tmp_path / "my data")
    proc = _make("describe", f"DATA={y}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"items": 3' in proc.stdout
    store = tmp_path / "my stores" / "the store.h5"
    proc = _make("features", f"DATA={y}", "EXTRACTORS=generator", f"STORE={store}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert store.is_file() and "generator-" in proc.stdout


def test_on_invalid_reaches_the_extractor_run(tmp_path):
    y = _table(tmp_path / "dup", ids=("a", "a", "c"))
    store = tmp_path / "s.h5"
    proc = _make("features", f"DATA={y}", "EXTRACTORS=generator", f"STORE={store}", cwd=tmp_path)
    assert proc.returncode == 2 and "duplicate item_id" in proc.stderr
    proc = _make("features", f"DATA={y}", "EXTRACTORS=generator", f"STORE={store}", "ON_INVALID=skip", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Path(f"{store}.invalid.csv").is_file()


def test_reinstall_follows_the_content_of_pyproject_and_constraints_not_file_times(tmp_path):
    for f in ("Makefile", "pyproject.toml", "constraints/ci.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, tmp_path / f)
    venv = tmp_path / "env"  # an existing environment (e.g. beside a fresh clone)

    def dry_install():
        return subprocess.run(["make", "-n", "install", f"VENV={venv}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60).stdout

    assert "pip install" in dry_install()  # never installed
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes() +
                            (tmp_path / "constraints/ci.txt").read_bytes()).hexdigest()[:16]
    venv.mkdir()
    (venv / f".installed-{digest}").touch()
    assert "pip install" not in dry_install()  # installed with these files
    os.utime(tmp_path / "pyproject.toml")  # newer file time, same content (a fresh clone): no reinstall
    assert "pip install" not in dry_install()
    with open(tmp_path / "constraints/ci.txt", "a") as f:
        f.write("extra-package==1.0\n")
    assert "pip install" in dry_install()  # the constraints changed
