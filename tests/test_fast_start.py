"""Fast start: a job imports what it uses. Scoring a cached image with a model whose blocks need no torch
imports no torch, no Optuna and nothing of the fit; no `--help` imports the scientific stack.

These check which modules a fresh process loads, not how long it takes (the times are measured by
benchmarks/bench_startup.py, as ratios within one run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST_FIT = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet",
            "--jobs", "1", "--no-select-blocks"]
#: the fit: scoring a bundle needs none of it (the model's classes live in stacked_model, heads, bundle)
FIT_MODULES = ("regressors.stacking", "regressors.tuning", "regressors.task_pool", "regressors.block_selection",
               "regressors.workflow", "regressors.report", "regressors.metrics", "regressors.data",
               "regressors.ray_tasks", "regressors.generator_probe", "experiments")
#: never needed to score a cached image with a model of nss + generator blocks
HEAVY = ("torch", "torchvision", "transformers", "optuna", "pytest", "ray")


def _modules_after(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (which sets ``rc``) in a fresh interpreter; its exit status and the modules it loaded."""
    out = tmp_path / "modules.json"
    script = (f"import json, sys\n{code}\n"
              f"json.dump({{'rc': rc, 'modules': sorted(sys.modules)}}, open({str(out)!r}, 'w'))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def cached_image(tmp_path_factory):
    """A bundle of nss + generator (no torch model) trained on the tiny demo dataset, one held-out image
    and a feature cache that already holds it."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main as regress

    from aigcq.score import main as score

    root = tmp_path_factory.mktemp("fast_start")
    cfg = DemoConfig(n_sources=5, crops_per_source=2, size=48, heldout_sources=1)
    store = build_demo_store(root / "demo", cfg, extractors=("nss", "generator"))
    assert regress(["fit", "--track", "image", "--store", str(store), "--out", str(root / "run"), *FAST_FIT]) == 0
    image = sorted((root / "demo" / "data" / "heldout" / "images").glob("*.png"))[0]
    cache = root / "cache" / "features-image.h5"
    assert score([str(root / "run" / "model"), str(image), "--cache", str(cache), "--no-progress", "--quiet"]) == 0
    return root / "run" / "model", image, cache


def test_scoring_a_cached_image_loads_no_torch_optuna_or_fit_module(cached_image, tmp_path):
    model, image, cache = cached_image
    args = [str(model), str(image), "--cache", str(cache), "--no-progress", "--quiet"]
    got = _modules_after(f"from aigcq.cli import main\nrc = main(['score', *{args!r}])", tmp_path)
    assert got["rc"] == 0
    loaded = set(got["modules"])
    assert "regressors.stacked_model" in loaded and "skops.io" in loaded  # the model really was loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, sorted(m for m in loaded if m.split(".")[0] in HEAVY)[:20]
    fit = sorted(m for m in loaded if m.startswith(FIT_MODULES))
    assert not fit, f"scoring imported the fit: {fit}"
    # skops without estimator discovery (which imports every scikit-learn module, their test helpers included)
    assert "sklearn.utils._testing" not in loaded and "sklearn.semi_supervised" not in loaded


def test_a_bundle_written_before_the_model_class_moved_still_loads(cached_image, tmp_path):
    """Bundles name the class they hold: ones written before StackedModel left regressors.stacking keep loading."""
    import shutil
    import zipfile

    import numpy as np

    from regressors import bundle

    model, _, _ = cached_image
    old = tmp_path / "model"
    shutil.copytree(model, old)
    skops_file = old / bundle.MODEL_FILE
    with zipfile.ZipFile(skops_file) as z:
        files = {n: z.read(n) for n in z.namelist()}
    schema = files["schema.json"].decode()
    assert '"regressors.stacked_model"' in schema
    files["schema.json"] = schema.replace('"regressors.stacked_model"', '"regressors.stacking"').encode()
    with zipfile.ZipFile(skops_file, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    info = json.loads((old / bundle.BUNDLE_JSON).read_text())
    from regressors.bundle_integrity import seal

    seal(old, info)  # the manifest lists model.skops as it is now (an older bundle was sealed so when written)
    loaded, _ = bundle.load_bundle(old)
    fresh, _ = bundle.load_bundle(model)
    assert type(loaded) is type(fresh)
    X = np.random.default_rng(0).normal(size=(3, info["n_features"]))
    np.testing.assert_array_equal(loaded.predict(X), fresh.predict(X))


@pytest.mark.parametrize("job", ["describe", "validate", "features", "list", "merge", "info", "errors", "regress",
                                 "predict", "score", "ablate", "reproduce", "demo"])
def test_help_loads_no_scientific_stack(job, tmp_path):
    code = f"from aigcq.cli import main\ntry:\n    rc = main([{job!r}, '--help'])\nexcept SystemExit as e:\n    rc = e.code"
    got = _modules_after(code, tmp_path)
    assert got["rc"] in (0, None)
    heavy = sorted({m.split(".")[0] for m in got["modules"]} & {"pandas", "torch", "sklearn", "scipy", "h5py",
                                                                "optuna", "PIL", "skops", "lightgbm"})
    assert not heavy, f"aigcq {job} --help imports {heavy}"
