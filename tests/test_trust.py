"""in_domain (regressors/domain.py) and score_lo/score_hi (regressors/conformal.py), alone and through a bundle."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regressors.conformal import ConformalIntervals, alpha_at, parse_level
from regressors.domain import DomainDetector, conformal_threshold
from regressors.trust_fit import _folds, fit_intervals

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the detector
def _clusters(n: int, rng, d: int = 12):
    """Items in groups (prompts): each group a cluster around its own centre, as prompts/photos are."""
    g = rng.integers(0, n // 8, n)
    centres = rng.normal(size=(n // 8, d)) * 2
    return centres[g] + rng.normal(size=(n, d)), g


def test_the_false_flag_rate_on_new_groups_is_the_calibrated_one():
    rng = np.random.default_rng(0)
    X, g = _clusters(3000, rng)
    det = DomainDetector({"b": [0, X.shape[1]]}, false_flag_rate=0.05, seed=0).fit(X, _folds(len(X), g, 0, "grouped"))
    assert det.oof_flag_rate_ == pytest.approx(0.05, abs=0.01)
    Xn, _ = _clusters(3000, np.random.default_rng(1))  # new items from new groups of the same distribution
    assert np.mean(~det.in_domain(Xn)) < 0.1
    far = Xn[:50] + 25.0  # features far from anything in training
    assert not det.in_domain(far).any()


def test_an_item_off_the_training_subspace_is_flagged_even_where_its_projection_is_familiar():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 3))
    X = np.hstack([base, base @ rng.normal(size=(3, 20)) + 0.01 * rng.normal(size=(600, 20))])  # rank ~3
    det = DomainDetector({"b": [0, 23]}, n_components=3, seed=0).fit(X, _folds(600, np.arange(600) % 60, 0, "grouped"))
    scaler, pca, _, _ = det.models_["b"]
    v = rng.normal(size=(20, 23))
    v -= (v @ pca.components_.T) @ pca.components_  # orthogonal to the components: the same PCA scores
    v *= 6 / np.linalg.norm(v, axis=1, keepdims=True)
    odd = X[:20] + v * scaler.scale_
    np.testing.assert_allclose(pca.transform(scaler.transform(odd)), pca.transform(scaler.transform(X[:20])), atol=1e-9)
    assert not det.in_domain(odd).any() and det.in_domain(X[:20]).all()


def test_blocks_are_judged_each_on_its_own_scale():
    rng = np.random.default_rng(0)
    X, g = _clusters(1000, rng, d=8)
    X = np.hstack([X, 1000 * X])  # a block of far larger numbers
    det = DomainDetector({"small": [0, 8], "large": [8, 16]}, seed=0).fit(X, _folds(len(X), g, 0, "grouped"))
    bad = X[:10].copy()
    bad[:, :8] += 30  # only the small block is foreign
    assert not det.in_domain(bad).any()
    assert set(det.block_scores(bad)) == {"small", "large"}


def test_conformal_threshold_rank():
    s = np.arange(1, 100, dtype=float)  # 99 scores
    assert conformal_threshold(s, 0.1) == 90.0  # rank ceil(100 * 0.9) = 90
    assert conformal_threshold(s[:10], 0.01) == 10.0  # too few items for 1%: the largest


# ------------------------------------------------------------------ the intervals
def test_intervals_equal_crepes_rule_for_every_mode():
    from crepes import ConformalRegressor

    rng = np.random.default_rng(0)
    res, sig = rng.normal(size=500) * 0.3, rng.uniform(0.1, 1, 500)
    pred, sig_new = rng.uniform(1, 5, 40), rng.uniform(0.1, 1, 40)
    for level in (0.5, 0.8, 0.9, 0.95):
        ci = ConformalIntervals("standard").fit(res)
        lo, hi = ci.interval(pred, None, level)
        want = ConformalRegressor().fit(res).predict_int(pred, confidence=level)
        np.testing.assert_allclose(np.c_[lo, hi], want)
        ci = ConformalIntervals("spread").fit(res, sig)
        lo, hi = ci.interval(pred, sig_new, level)
        want = ConformalRegressor().fit(res, sigmas=sig + ci.beta_).predict_int(pred, sigmas=sig_new + ci.beta_,
                                                                               confidence=level)
        np.testing.assert_allclose(np.c_[lo, hi], want)


def test_coverage_on_new_items_is_the_nominal_level_and_adaptive_intervals_are_narrower_where_noise_varies():
    rng = np.random.default_rng(0)
    n = 4000
    sd = rng.uniform(0.1, 1.0, 2 * n)  # heteroscedastic: the spread of the heads tracks it
    resid = rng.normal(size=2 * n) * sd
    spread = sd * rng.uniform(0.8, 1.2, 2 * n)
    groups = np.arange(n) // 4
    ci, info = fit_intervals(resid[:n], {"standard": None, "spread": spread[:n]}, groups, -np.inf, np.inf)
    assert info["mode"] == "spread"
    assert info["cross_conformal"]["spread"]["mean_width"] < info["cross_conformal"]["standard"]["mean_width"]
    lo, hi = ci.interval(np.zeros(n), spread[n:], 0.9)
    assert np.mean((resid[n:] >= lo) & (resid[n:] <= hi)) == pytest.approx(0.9, abs=0.02)
    lo, hi = ci.interval(np.zeros(n), spread[n:], 0.5)
    assert np.mean((resid[n:] >= lo) & (resid[n:] <= hi)) == pytest.approx(0.5, abs=0.03)


def test_with_few_correlated_groups_and_modes_to_choose_from_new_groups_are_covered_at_the_nominal_level():
    """The demo's case (issue 21): a dozen photos, items of one photo sharing its error, and the fit picking
    the narrowest of three modes on the same residuals it calibrates on. Neither the clustering nor the
    choice may cost more than 2 points of coverage on a new group, averaged over many datasets; nor may a
    guard against them widen the intervals past nominal + 2 (measured: about 0.5 point each; the demo's
    85.7% on one draw of its labels is that draw's noise, see docs/trust.md)."""
    m, icc, reps = 12, 0.5, 300
    covered = {0.8: [], 0.9: []}
    for r in range(reps):
        rng = np.random.default_rng(r)
        groups = int(rng.integers(6, 13))  # calibration groups, as a demo fold has 11 or 12 photos
        res = (rng.normal(size=(groups + 1, 1)) * np.sqrt(icc) + rng.normal(size=(groups + 1, m)) * np.sqrt(1 - icc))
        useless = {name: rng.uniform(0, 1, res.shape) for name in ("spread", "distance")}  # chosen only by chance
        cal = np.s_[:groups]
        ci, _ = fit_intervals(res[cal].ravel(), {"standard": None, **{k: v[cal].ravel() for k, v in useless.items()}},
                              np.repeat(np.arange(groups), m), -np.inf, np.inf, seed=r)
        difficulty = useless[ci.mode_][groups] if ci.mode_ in useless else None
        for level in covered:
            lo, hi = ci.interval(np.zeros(m), difficulty, level)
            covered[level].append(np.mean((res[groups] >= lo) & (res[groups] <= hi)))
    for level, got in covered.items():
        assert np.mean(got) == pytest.approx(level, abs=0.02), level


def test_intervals_are_bounded_to_the_range_and_hold_the_score():
    ci = ConformalIntervals().fit(np.linspace(-1, 1, 101), y_min=1.0, y_max=5.0)
    pred = np.array([-20.0, 1.2, 3.0, 4.9, 7.0])  # unbounded scores (a model without clipping)
    lo, hi = ci.interval(pred)
    assert (lo <= pred).all() and (pred <= hi).all()
    assert ((lo >= 1.0) | (lo == pred)).all() and ((hi <= 5.0) | (hi == pred)).all()
    assert alpha_at(np.arange(5.0)[::-1], 0.99) == np.inf  # too few residuals for 99%: unbounded (then the range)


@pytest.mark.parametrize("text, level", [("0.9", 0.9), ("90", 0.9), ("90%", 0.9), ("0.5", 0.5), (80, 0.8)])
def test_level_parsing(text, level):
    assert parse_level(text) == pytest.approx(level)


@pytest.mark.parametrize("text", ["0", "100", "abc", "-5", "150%"])
def test_bad_levels_are_one_line(text):
    with pytest.raises(ValueError, match="--level"):
        parse_level(text)


# ------------------------------------------------------------------ through a bundle
def test_the_bundle_records_and_the_card_explains_the_trust_columns(score_model, tmp_path, capsys):
    from aigcq.score import main as score_main

    bundle, heldout = score_model
    info = json.loads((bundle / "bundle.json").read_text())
    d, iv = info["trust"]["domain"], info["trust"]["intervals"]
    assert d["blocks"] == ["nss", "prompt_minilm"] and not d["label_only"]  # the generator one-hot is not measured
    assert iv["mode"] in ("standard", "spread", "distance") and iv["level"] == 0.9
    card = (bundle / "MODEL.md").read_text()
    assert "`in_domain`" in card and "`score_lo` – `score_hi`" in card and "90% prediction interval" in card
    listing = heldout / "list.csv"
    capsys.readouterr()
    assert score_main([str(bundle), str(listing), "--cache", str(tmp_path / "c.h5"), "--no-progress"]) == 0
    df90 = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert score_main([str(bundle), str(listing), "--cache", str(tmp_path / "c.h5"), "--no-progress",
                       "--level", "50%"]) == 0
    df50 = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert ((df50["score_hi"] - df50["score_lo"]) <= (df90["score_hi"] - df90["score_lo"]) + 1e-12).all()
    assert ((df90["score_hi"] - df90["score_lo"]) > 0).any()
    assert score_main([str(bundle), str(listing), "--cache", str(tmp_path / "c.h5"), "--level", "101%"]) == 2


def _fit_blocks(tmp_path, extractors: tuple[str, ...]) -> Path:
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    store = build_demo_store(tmp_path / "demo", DemoConfig(n_sources=5, crops_per_source=1, size=32),
                             extractors=extractors)
    run = tmp_path / "run"
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(run), "--trials", "0", "--folds", "3",
                 "--tune-folds", "2", "--bootstrap", "0", "--heads", "enet", "--jobs", "1",
                 "--no-select-blocks"]) == 0
    return run / "model"


def test_a_label_only_model_says_in_domain_judges_only_the_prompt(tmp_path, capsys):
    from aigcq import Predictor

    bundle = _fit_blocks(tmp_path, ("prompt_minilm", "generator"))
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["trust"]["domain"]["label_only"] and info["trust"]["domain"]["blocks"] == ["prompt_minilm"]
    assert "reads no feature of the media itself" in (bundle / "MODEL.md").read_text()
    img = next((tmp_path / "demo" / "data" / "images").glob("*.png"))
    with pytest.warns(UserWarning):
        p = Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False)
    df = p.score([str(img), str(img)], prompts=["a close-up texture of green grass blades",
                                                 "zxqv 1234 lorem ipsum dolor sit amet"])
    assert isinstance(df["in_domain"][0], bool) and np.isfinite(df["domain_score"]).all()
    assert df["domain_score"][1] > df["domain_score"][0]  # the unfamiliar prompt lies farther


def test_a_generator_only_model_leaves_in_domain_empty_and_says_why(tmp_path):
    from aigcq import Predictor

    bundle = _fit_blocks(tmp_path, ("generator",))
    assert "`in_domain` is empty" in (bundle / "MODEL.md").read_text()
    img = next((tmp_path / "demo" / "data" / "images").glob("*.png"))
    with pytest.warns(UserWarning):
        p = Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False)
    df = p.score([str(img)], generators=["fakegen-blur"])
    assert df["in_domain"][0] is None and np.isnan(df["domain_score"][0])
    assert df["score_lo"][0] <= df["score"][0] <= df["score_hi"][0]
    assert any("in_domain is empty" in n for n in p.notes)


# ------------------------------------------------------------------ issue 21's "done when", on `make demo`'s model
@pytest.mark.slow
def test_the_demo_model_bounds_flags_and_brackets_its_scores(tmp_path):
    """The default demo (no ablation): 24 held-out images and three foreign ones; then a JSON list naming
    " lead.png" beside a different "lead.png"."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--out", str(out), "--no-ablation"], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((out / "regress" / "model" / "bundle.json").read_text())
    lo_t, hi_t = info["target"]["min"], info["target"]["max"]
    df = pd.read_csv(out / "heldout_scores.csv")
    held, foreign = df.iloc[:24], df.iloc[24:]
    assert len(held) == 24 and [Path(p).stem for p in foreign["path"]] == ["text_page", "flat_grey", "noise"]
    assert (df["status"] == "ok").all()
    assert (foreign["in_domain"] == False).sum() >= 2  # noqa: E712
    assert (held["in_domain"] == True).sum() >= 22  # noqa: E712
    assert ((df["score_lo"] <= df["score"]) & (df["score"] <= df["score_hi"])).all()
    # a list naming " lead.png" next to a different "lead.png": each scored as named
    folder = tmp_path / "lead"
    folder.mkdir()
    imgs = sorted((out / "data" / "heldout" / "images").glob("*.png"))
    shutil.copy(imgs[0], folder / " lead.png")
    shutil.copy(imgs[5], folder / "lead.png")
    (folder / "list.json").write_text(json.dumps([" lead.png", "lead.png"]))
    run = [sys.executable, "-m", "aigcq", "score", str(out / "regress" / "model"), "--cache",
           str(out / "score-cache.h5"), "--no-progress"]
    both = subprocess.run([*run, str(folder / "list.json")], cwd=REPO, capture_output=True, text=True)
    assert both.returncode == 0, both.stderr
    got = pd.read_csv(io.StringIO(both.stdout), keep_default_na=False)
    assert got["path"].tolist() == [" lead.png", "lead.png"]
    expect = pd.read_csv(io.StringIO(subprocess.run([*run, str(imgs[0]), str(imgs[5])], cwd=REPO, capture_output=True,
                                                    text=True).stdout))
    np.testing.assert_allclose(got["score"].astype(float), expect["score"], rtol=0, atol=1e-9)
    assert got["score"][0] != got["score"][1]
    # bounded scores (issue 21 part 1, built on branch i20: StackedModel clips every head and the final score to
    # the training target range); last, so that a model without it fails here only
    assert df["score"].between(lo_t, hi_t).all(), df[["path", "score"]]
