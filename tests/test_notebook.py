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
