"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

try:  # property-based tests (tests/test_properties.py): bounded and reproducible in CI, longer locally
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=20, derandomize=True, database=None, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    settings.register_profile("dev", max_examples=200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))  # HYPOTHESIS_PROFILE=dev: the long run
except ImportError:  # the test extra is not installed: test_properties.py skips itself
    pass
SHARED_DATA = Path(os.environ.get("AIGCQ_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is not part of the repo; set AIGCQ_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    # Tests never download: any hub access must come from a local path or fail clearly.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def _table_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("table_cache")


@pytest.fixture(autouse=True)
def _table_cache(monkeypatch, _table_cache_dir):
    # Parsed label tables are cached per test session, never in the user's ~/.cache.
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(_table_cache_dir))


@pytest.fixture(scope="session")
def astronaut():
    """A real photograph shipped with scikit-image (no download)."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module, restored after.

    Why: on a busy 2-core machine (CI, shared dev boxes) two intra-op threads wait for
    each other at every barrier and run CNN/RAFT tests several times slower than one.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def score_model(tmp_path_factory):
    """A bundle trained on the tiny demo dataset (nss, prompt_minilm, generator; it reads the prompt), and the
    held-out images: shared by the `aigcq score` tests (test_score.py, test_score_hostile.py)."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    root = tmp_path_factory.mktemp("score")
    cfg = DemoConfig(n_sources=5, crops_per_source=2, size=48, heldout_sources=1)
    store = build_demo_store(root / "demo", cfg, extractors=("nss", "prompt_minilm", "generator"))
    run = root / "run"
    # --no-select-blocks: on 10 photos nested block selection may keep only the prompt or generator block; these
    # tests are about scoring content (selection has its own tests in test_block_selection.py)
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(run), "--trials", "0", "--folds", "3",
                 "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet", "--jobs", "1",
                 "--no-select-blocks"]) == 0
    return run / "model", root / "demo" / "data" / "heldout"


@pytest.fixture(scope="session")
def nss_bundle(tmp_path_factory):
    """A real model bundle (nss + generator blocks, both rebuilt when scoring) on the tiny demo dataset, the run
    folder that holds it, and held-out images with their generators: (bundle, run, heldout list.csv)."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    root = tmp_path_factory.mktemp("nss_bundle")
    store = build_demo_store(root / "demo", DemoConfig(n_sources=5, crops_per_source=2, size=48, heldout_sources=1),
                             extractors=("nss", "generator"))
    run = root / "run"
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(run), "--trials", "0", "--folds", "3",
                 "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet", "--jobs", "1",
                 "--no-select-blocks", "--block-head", "none", "--fixed-heads", ""]) == 0  # every head reads the pixels
    return run / "model", run, root / "demo" / "data" / "heldout" / "list.csv"
