"""experiments/ablations.ipynb runs end to end (nbclient, python3 kernel of this interpreter) on a tiny store."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra (nbformat, nbclient, ipykernel) is not installed")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "ablations.ipynb"


def _kernel_for_this_interpreter(tmp_path: Path, monkeypatch) -> str:
    """A python3 kernelspec that runs *this* interpreter (the venv's), whatever is installed globally."""
    kdir = tmp_path / "jupyter" / "kernels" / "aigcq-test"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "aigcq test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "aigcq-test"


def test_ablation_notebook_executes(tmp_path, monkeypatch):
    from experiments.demo_data import DemoConfig, build_demo_store

    store = build_demo_store(tmp_path / "demo", DemoConfig(n_sources=6, crops_per_source=2, size=48),
                             extractors=("nss", "generator"))
    out = tmp_path / "nb-out"
    for k, v in {"AIGCQ_STORE": str(store), "AIGCQ_OUT": str(out), "AIGCQ_N_BOOT": "50", "AIGCQ_TRIALS": "0",
                 "AIGCQ_TARGET": "mos", "AIGCQ_EXTRACTORS": ""}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    kernel = _kernel_for_this_interpreter(tmp_path, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name=kernel, resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the bar chart and the per-generator chart
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "only nss" in text and "fakegen-blur" in text
    assert (out / "ablation.csv").is_file() and (out / "ablation.png").is_file()


def test_notebook_is_stored_without_outputs():
    # outputs in git would go stale and bloat diffs; the test above regenerates them
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    nbformat.validate(nb)


SCORE_NOTEBOOK = REPO / "experiments" / "score.ipynb"


def test_score_notebook_executes(tmp_path, monkeypatch):
    """experiments/score.ipynb: Predictor.load, the card, score(paths), score_images, on a tiny demo model."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    store = build_demo_store(tmp_path / "demo", DemoConfig(n_sources=4, crops_per_source=2, size=48, heldout_sources=1),
                             extractors=("nss", "generator"))
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(tmp_path / "run"), "--trials", "0",
                 "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet", "--jobs", "1"]) == 0
    for k, v in {"AIGCQ_MODEL": str(tmp_path / "run" / "model"), "AIGCQ_HELDOUT": str(tmp_path / "demo" / "data" / "heldout"),
                 "AIGCQ_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    kernel = _kernel_for_this_interpreter(tmp_path, monkeypatch)
    nb = nbformat.read(SCORE_NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name=kernel, resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "SRCC with the SYNTHETIC labels on 12 held-out images" in text
    # the unblurred image re-encodes to the very bytes the demo wrote: already in the cache
    assert "first call, computed per block: {'nss': 2}" in text
    assert "second call, computed per block: {'nss': 0" in text  # the same pixels again: from the cache
    assert any("text/markdown" in o.get("data", {}) for o in outputs)  # the card
    stored = nbformat.read(SCORE_NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
