"""The notebooks run the way Jupyter runs them: `jupyter execute`, the kernel started in the notebook's folder.

A tiny project (``runs/demo`` as ``make demo`` lays it out, with a small store and model) holds copies
of experiments/score.ipynb and experiments/ablations.ipynb in its ``experiments/`` folder; the
``jupyter execute`` command of the installed nbclient runs both there, with no path in the environment:
each notebook finds ``runs/`` from its own folder (experiments.runs_folder).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra (nbformat, nbclient, ipykernel) is not installed")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from experiments.runs_folder import find_runs, run_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"ablations": REPO / "experiments" / "ablations.ipynb", "score": REPO / "experiments" / "score.ipynb"}
PATH_VARS = ("AIGCQ_RUNS", "AIGCQ_PROJECT", "AIGCQ_MODEL", "AIGCQ_HELDOUT", "AIGCQ_STORE", "AIGCQ_OUT")


def _kernel_for_this_interpreter(folder: Path) -> dict[str, str]:
    """Environment with a kernelspec that runs *this* interpreter (the venv's), whatever is installed globally."""
    kdir = folder / "jupyter" / "kernels" / "aigcq-test"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "aigcq test", "language": "python",
    }))
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    # the kernel imports the project from this checkout, whatever folder it starts in
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env | {"JUPYTER_PATH": str(folder / "jupyter"), "MPLBACKEND": "Agg"}


def _jupyter_execute() -> str:
    exe = shutil.which("jupyter-execute", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-execute")
    if exe is None:
        pytest.skip("`jupyter-execute` (nbclient's command) is not on PATH")
    return exe


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    """A project folder as `make demo` leaves it (tiny): runs/demo/{data,demo.h5,regress/model}, experiments/*.ipynb."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    project = tmp_path_factory.mktemp("project")
    demo = project / "runs" / "demo"
    store = build_demo_store(demo, DemoConfig(n_sources=6, crops_per_source=2, size=48, heldout_sources=1),
                             extractors=("nss", "generator"))
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(demo / "regress"), "--trials", "0",
                 "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet", "--jobs", "1",
                 # both blocks kept, so that the notebook's cache counts show the nss block at work
                 "--no-select-blocks"]) == 0
    (project / "experiments").mkdir()
    for nb in NOTEBOOKS.values():
        shutil.copy(nb, project / "experiments" / nb.name)
    return project


def _outputs(path: Path) -> tuple[list, str]:
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    return outputs, text


def test_jupyter_execute_runs_both_notebooks_from_their_folder(demo_project, tmp_path):
    env = _kernel_for_this_interpreter(tmp_path)
    env |= {"AIGCQ_N_BOOT": "50", "AIGCQ_TRIALS": "0", "AIGCQ_CACHE": str(tmp_path / "cache")}
    nbs = [demo_project / "experiments" / nb.name for nb in NOTEBOOKS.values()]
    proc = subprocess.run([_jupyter_execute(), "--inplace", "--kernel_name=aigcq-test", "--timeout=300", *map(str, nbs)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    outputs, text = _outputs(demo_project / "experiments" / "ablations.ipynb")
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the bar chart and the per-generator chart
    assert "only nss" in text and "fakegen-blur" in text
    out = demo_project / "runs" / "notebook-ablation"  # the default output, in the project's runs/
    assert (out / "ablation.csv").is_file() and (out / "ablation.png").is_file()

    outputs, text = _outputs(demo_project / "experiments" / "score.ipynb")
    assert not [o for o in outputs if o.output_type == "error"]
    assert "SRCC with the SYNTHETIC labels on 12 held-out images" in text
    # the unblurred image re-encodes to the very bytes the demo wrote: already in the cache
    assert "first call, computed per block: {'nss': 2}" in text
    assert "second call, computed per block: {'nss': 0" in text  # the same pixels again: from the cache
    assert any("text/markdown" in o.get("data", {}) for o in outputs)  # the card
    assert (tmp_path / "cache").is_dir()  # AIGCQ_CACHE is a folder


def test_notebooks_are_stored_without_outputs():
    # outputs in git would go stale and bloat diffs; the test above regenerates them
    for path in NOTEBOOKS.values():
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        nbformat.validate(nb)


def test_the_run_folder_is_found_from_below_or_from_the_environment(tmp_path, monkeypatch):
    for var in PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "project"
    (project / "runs" / "demo").mkdir(parents=True)
    (project / "experiments" / "deeper").mkdir(parents=True)
    assert find_runs(project / "experiments" / "deeper") == project / "runs"
    assert find_runs(project) == project / "runs"
    monkeypatch.chdir(project / "experiments")
    assert find_runs() == project / "runs"  # the working directory, as Jupyter starts a kernel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("AIGCQ_PROJECT", str(project))
    assert find_runs(elsewhere) == (project / "runs").resolve()
    monkeypatch.setenv("AIGCQ_RUNS", str(project / "runs"))
    assert find_runs(elsewhere) == (project / "runs").resolve()
    monkeypatch.setenv("AIGCQ_MODEL", str(tmp_path / "my model"))
    assert run_path("demo/regress/model", env="AIGCQ_MODEL") == tmp_path / "my model"  # the override wins


def test_what_is_missing_says_what_to_run_or_set(tmp_path, monkeypatch):
    for var in PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    (project / "experiments").mkdir()
    with pytest.raises(FileNotFoundError, match=r"regress/model does not exist: run `make demo` in .*project "
                                                r"first, or set AIGCQ_MODEL"):
        run_path("demo/regress/model", env="AIGCQ_MODEL", start=project / "experiments")
    monkeypatch.setenv("AIGCQ_RUNS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="AIGCQ_RUNS=.*nowhere is not a folder"):
        find_runs(project)
    monkeypatch.delenv("AIGCQ_RUNS")
    monkeypatch.setenv("AIGCQ_PROJECT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no runs/ folder: run `make demo` there"):
        find_runs(project)
    monkeypatch.delenv("AIGCQ_PROJECT")
    lonely = tmp_path / "no project" / "experiments"
    lonely.mkdir(parents=True)
    if any((p / "runs").is_dir() for p in lonely.parents):
        pytest.skip(f"a runs/ folder exists above {lonely}: the upward search would find it")
    with pytest.raises(FileNotFoundError, match=r"no runs/ folder in .* or above it: run `make demo` .* set AIGCQ_RUNS"):
        find_runs(lonely)
