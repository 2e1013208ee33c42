"""The embedded demo dataset: shipped photos only, graded degradations, honest groups, SYNTHETIC labels."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from experiments.demo_data import FAMILIES, SOURCES, DemoConfig, _load_source, build_demo_dataset, degrade, synthetic_mos
from features_store import load_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = DemoConfig(n_sources=4, crops_per_source=2, size=64)
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "data", cfg), cfg


def test_every_source_photo_ships_with_scikit_image():
    for name in SOURCES:  # no pooch download: would fail offline on a fresh clone
        img = _load_source(name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and min(img.shape[:2]) >= 100


def test_dataset_loads_through_the_table_adapter(small):
    yaml_path, cfg = small
    m = load_dataset(yaml_path)
    assert len(m) == cfg.n_items == 4 * 2 * 6
    clean, problems = m.validate("stop")
    assert problems == []
    df = m.df
    assert df["group"].nunique() == 4  # CV groups = source photos
    assert set(df["generator"]) == {g for g, _, _ in FAMILIES.values()} | {"fakegen-pristine"}
    assert df["mos"].between(1, 5).all() and "level" in m.labels
    assert df.groupby("group")["prompt"].nunique().eq(1).all()
    with Image.open(Path(m.root) / df["path"].iat[0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    readme = (yaml_path.parent / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC LABELS") and "SYNTHETIC" in yaml_path.read_text()


def test_rebuild_is_skipped_only_for_the_same_config(small, tmp_path):
    yaml_path, cfg = small
    labels = yaml_path.parent / "labels.csv"
    before = labels.stat().st_mtime_ns
    build_demo_dataset(yaml_path.parent, cfg)
    assert labels.stat().st_mtime_ns == before
    out = tmp_path / "d"
    build_demo_dataset(out, DemoConfig(n_sources=2, crops_per_source=1, size=48))
    build_demo_dataset(out, DemoConfig(n_sources=3, crops_per_source=1, size=48))
    assert len(pd.read_csv(out / "labels.csv")) == 3 * 6


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_degradation_grows_with_level(family):
    rng = np.random.default_rng(0)
    img = np.asarray(Image.fromarray(_load_source("astronaut")).resize((128, 128)))
    dist = [np.abs(degrade(img, family, lvl, np.random.default_rng(1)).astype(float) - img).mean() for lvl in range(5)]
    assert dist[0] == 0 and all(a < b for a, b in zip(dist[1:], dist[2:])), dist
    with pytest.raises(ValueError, match="unknown degradation family"):
        degrade(img, "warp", 1, rng)


def test_synthetic_rating_falls_with_level():
    means = [np.mean([synthetic_mos("blur", lvl, 0.0, np.random.default_rng(s)) for s in range(200)]) for lvl in range(5)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    with pytest.raises(ValueError, match="n_sources"):
        build_demo_dataset("/nonexistent", DemoConfig(n_sources=99))


@pytest.mark.slow
def test_make_demo_end_to_end(tmp_path):
    """The demo's real entry points: extractors run -> regressors fit -> ablation, on a small config."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.demo", "--out", str(out), "--n-sources", "12", "--size", "64",
         "--trials", "2", "--heads", "svr,enet"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SYNTHETIC" in proc.stdout and str(out / "regress" / "metrics.json") in proc.stdout
    for f in ("regress/metrics.json", "regress/scatter.png", "regress/report.md", "ablation/ablation.png"):
        assert (out / f).is_file(), f
    assert (out / "regress" / "report.md").read_text().startswith("> **SYNTHETIC LABELS.**")
