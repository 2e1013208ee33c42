"""The fit's speed changes keep results: the swapped-halves nesting (cross), final models fitted in the CV's graph."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regressors.bundle import load_bundle
from regressors.cli import main
from regressors.heads import blocks_from_dims
from regressors.stacking import StackConfig, cross_validate, fit_stack, resolve_nested
from test_regress_cli import _make_store


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(1)
    n, n_prompts = 600, 200
    gen = rng.integers(0, 4, n)
    prompt = rng.integers(0, n_prompts, n)
    emb = rng.normal(size=(n_prompts, 10))[prompt]
    X = np.hstack([np.eye(4)[gen], emb])
    y = np.array([0.0, 1.0, 2.0, -1.0])[gen] + np.sin(emb[:, 0]) + 0.3 * rng.normal(size=n)
    return X, y, prompt.astype(str), blocks_from_dims({"generator": 4, "prompt": 10})


def test_cross_scores_every_item_with_tuning_from_the_other_half_only(toy):
    X, y, groups, blocks = toy
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested="cross", pca=None, heads=("enet", "svr"))
    cv = cross_validate(X, y, groups, blocks, cfg)
    assert cv["info"]["nested"] == "cross"
    np.testing.assert_array_equal(cv["scored"], np.arange(len(y)))  # every item scored once, in index order
    tuning = cv["tuning_rows"]
    assert len(tuning) == 2 and not set(tuning[0]) & set(tuning[1])
    for p, rows in enumerate(tuning):
        scored_here = cv["scored"][(cv["folds"] >= p * 3) & (cv["folds"] < (p + 1) * 3)]
        assert len(scored_here) > 0
        assert not set(groups[rows]) & set(groups[scored_here])  # no prompt both tuned on and scored by that pass
    from regressors.metrics import main_score

    assert main_score(cv["stack"], y) > main_score(cv["heads"]["block:prompt"], y)
    again = cross_validate(X, y, groups, blocks, cfg)
    np.testing.assert_array_equal(again["stack"], cv["stack"])  # deterministic for the same seed


def test_split_scores_are_unchanged_by_the_shared_code_path(toy):
    """nested=split scores the complement of the tuning set, in index order, as before."""
    X, y, groups, blocks = toy
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested="split", pca=None, heads=("enet",))
    cv = cross_validate(X, y, groups, blocks, cfg)
    (tune_rows,) = cv["tuning_rows"]
    np.testing.assert_array_equal(cv["scored"], np.setdiff1d(np.arange(len(y)), tune_rows))
    assert set(cv["folds"]) == {0, 1, 2}


def test_auto_nesting_by_size():
    cfg = StackConfig()
    assert resolve_nested(cfg, 500) == "full"
    assert resolve_nested(cfg, 2982) == "cross"
    assert resolve_nested(cfg, 14000) == "split"


def _fit_toy(tmp_path, nested: str, heads: str):
    """`regressors fit` on the toy store with a small budget; (store, run folder)."""
    store = _make_store(tmp_path / "toy.h5")
    out = tmp_path / "out"
    assert main(["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm",
                 "--out", str(out), "--trials", "0", "--folds", "3", "--tune-folds", "2", "--pca", "0",
                 "--bootstrap", "0", "--nested", nested, "--heads", heads, "--jobs", "2"]) == 0
    return store, out


def test_fit_keeps_in_sample_predictions_of_the_tuning_set_only(tmp_path):
    store, out = _fit_toy(tmp_path, "split", "svr,knn")
    pred = pd.read_csv(out / "predictions.csv")
    m = json.loads((out / "metrics.json").read_text())
    assert m["timing"]["final_fit_s"] < m["timing"]["cross_validation_s"]  # split: fitted in the outer folds' pass
    model, _ = load_bundle(out / "model")
    from regressors.data import load_track

    data = load_track(str(store), ["generator", "prompt_minilm"], split="train", target="mos")
    train = pred[pred["split"] == "train"].set_index("item_id").loc[data.ids]
    in_sample = (train["source"] == "tuning_set_in_sample").to_numpy()
    assert 0 < in_sample.sum() < len(train) and (train["source"][~in_sample] == "cv_out_of_fold").all()
    np.testing.assert_allclose(train["prediction"][in_sample], model.predict(data.X[in_sample]), rtol=1e-12)
    for split in ("val", "test"):
        part = load_track(str(store), ["generator", "prompt_minilm"], split=split, target=None,
                          vocabularies={data.keys[b]: v for b, v in data.vocabularies.items()})
        got = pred[pred["split"] == split].set_index("item_id").loc[part.ids, "prediction"]
        np.testing.assert_allclose(got, model.predict(part.X), rtol=1e-12)


@pytest.mark.parametrize("nested", ["split", "cross"])
def test_final_model_fitted_in_the_outer_folds_pass_is_the_reused_tuning_fit(toy, nested):
    X, y, groups, blocks = toy
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested=nested, pca=None, heads=("enet", "knn"), n_jobs=2)
    extra = X[:37] + 0.1
    cv = cross_validate(X, y, groups, blocks, cfg, final_predict=extra)
    plain = cross_validate(X, y, groups, blocks, cfg)
    np.testing.assert_array_equal(cv["stack"], plain["stack"])  # the final fit changes no score
    ref = fit_stack(X, y, groups, blocks, cfg, tuned=cv["tuned"])
    np.testing.assert_allclose(cv["final_predictions"], ref.predict(extra), rtol=1e-12)
    rows, pred = cv["final_in_sample"]
    np.testing.assert_array_equal(rows, np.setdiff1d(np.arange(len(y)), cv["scored"]))
    assert (len(rows) > 0) == (nested == "split")
    if len(rows):
        np.testing.assert_allclose(pred, ref.predict(X[rows]), rtol=1e-12)
    assert cv["final"].weights() == ref.weights() and cv["final_predict_s_per_row"] > 0


def test_full_nesting_fits_every_outer_fold_and_the_final_model_as_fit_stack_does(toy):
    """nested=full runs all outer folds' models and the final model as one graph of tasks: the same models
    (same predictions) as fit_stack on each outer training fold and on everything."""
    from regressors.stacking import fit_folds
    from regressors.tuning import make_folds

    X, y, groups, blocks = toy
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested="full", pca=None, heads=("enet", "svr"), n_jobs=2)
    extra = X[:29] + 0.1
    cv = cross_validate(X, y, groups, blocks, cfg, final_predict=extra)
    plain = cross_validate(X, y, groups, blocks, cfg)
    np.testing.assert_array_equal(cv["stack"], plain["stack"])
    folded = fit_folds(cfg, groups, len(y), "full")
    for k, (tr, te) in enumerate(make_folds(len(y), groups, folded.outer_folds, cfg.seed + 1, cfg.protocol)):
        fold_cfg = StackConfig(**{**folded.to_dict(), "seed": cfg.seed + 100 * (k + 1)})
        ref = fit_stack(X[tr], y[tr], groups[tr], blocks, fold_cfg, tag=f"outer{k}")
        np.testing.assert_allclose(cv["stack"][te], ref.predict(X[te]), rtol=0, atol=1e-12)
        assert cv["info"]["outer"][k]["config"] == ref.info["config"]
    final = fit_stack(X, y, groups, blocks, cfg)
    np.testing.assert_allclose(cv["final_predictions"], final.predict(extra), rtol=0, atol=1e-12)
    assert cv["final"].weights() == final.weights() and cv["final_in_sample"][0].size == 0


def test_fit_with_cross_nesting_scores_every_training_item(tmp_path):
    store, out = _fit_toy(tmp_path, "cross", "enet,knn")
    m = json.loads((out / "metrics.json").read_text())
    assert m["nested"] == "cross" and m["n"] == 240 and "other share" in m["nested_note"]
    pred = pd.read_csv(out / "predictions.csv")
    assert (pred.loc[pred["split"] == "train", "source"] == "cv_out_of_fold").all()
    assert len((out / "submission" / "output.txt").read_text().splitlines()) == 30
    model, _ = load_bundle(out / "model")
    from regressors.data import load_track

    data = load_track(str(store), ["generator", "prompt_minilm"], split="test", target=None,
                      vocabularies={k["key"]: k["vocabulary"] for k in json.loads(
                          (out / "model" / "bundle.json").read_text())["features"] if k.get("vocabulary")})
    got = pred[pred["split"] == "test"].set_index("item_id").loc[data.ids, "prediction"]
    np.testing.assert_allclose(got, model.predict(data.X), rtol=1e-12)
