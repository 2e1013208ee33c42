"""Generator probe: names the generator from content features; fills the block only where it is unknown."""
from __future__ import annotations

import numpy as np
import pytest

from regressors import bundle
from regressors.generator_probe import GeneratorProbe, ProbedModel, fill_generator, oof_generator_block
from regressors.heads import blocks_from_dims
from regressors.metrics import main_score
from regressors.stacking import StackConfig, fit_stack
from regressors.tuning import make_folds


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n = 240
    gen = rng.integers(0, 3, n)
    # the "pixels" carry a generator signature (as resolution and style do), the prompt does not
    pix = rng.normal(size=(n, 10)) + 1.5 * np.eye(3)[gen] @ rng.normal(size=(3, 10))
    emb = rng.normal(size=(n, 6))
    onehot = np.zeros((n, 4))  # 3 generators + the unknown flag, as extractors.generator writes it
    onehot[np.arange(n), gen] = 1.0
    X = np.hstack([onehot, emb, pix])
    y = np.array([0.0, 2.0, -1.0])[gen] + 0.5 * emb[:, 0] + 0.3 * rng.normal(size=n)
    groups = rng.integers(0, 80, n).astype(str)
    return X, y, groups, gen, blocks_from_dims({"generator": 4, "prompt": 6, "pixels": 10})


def hide(X, rows):
    X = X.copy()
    X[rows, :4] = 0.0
    X[rows, 3] = 1.0  # generator_unknown
    return X


def test_probe_names_the_generator_out_of_fold(data):
    X, y, groups, gen, blocks = data
    hits = []
    for tr, te in make_folds(len(y), groups, 4, seed=0):
        probe = GeneratorProbe(blocks=blocks, pca=None).fit(X[tr])
        proba = probe.predict_block(X[te])
        assert proba.shape == (len(te), 4) and np.allclose(proba.sum(1), 1.0) and np.all(proba[:, 3] == 0)
        hits.append(probe.predict(hide(X[te], slice(None))) == gen[te])  # hiding the generator changes nothing
    assert np.concatenate(hits).mean() > 0.8


def test_fill_touches_only_unknown_rows_and_the_generator_block(data):
    X, y, groups, gen, blocks = data
    probe = GeneratorProbe(blocks=blocks).fit(X)
    Xh = hide(X, slice(0, 50))
    filled = fill_generator(Xh, probe)
    np.testing.assert_array_equal(filled[50:], Xh[50:])
    np.testing.assert_array_equal(filled[:50, 4:], Xh[:50, 4:])
    assert np.all(filled[:50, 3] == 0) and np.allclose(filled[:50, :3].sum(1), 1.0)
    with pytest.raises(ValueError, match="needs a content block"):
        GeneratorProbe(blocks={"generator": [0, 4]}).fit(X[:, :4])
    # rows with an unknown generator are not training targets
    assert GeneratorProbe(blocks=blocks).fit(hide(X, slice(0, 200))).classes_.size <= 3


def test_oof_block_is_out_of_fold(data):
    X, y, groups, gen, blocks = data
    oof = oof_generator_block(X, groups, blocks, n_splits=4, seed=0)
    np.testing.assert_array_equal(oof[:, 4:], X[:, 4:])
    assert not np.array_equal(oof[:, :4], X[:, :4]) and np.allclose(oof[:, :3].sum(1), 1.0)


def test_probe_recovers_most_of_the_generator_gap_and_round_trips(data, tmp_path):
    X, y, groups, gen, blocks = data
    tr, te = make_folds(len(y), groups, 3, seed=2)[0]
    cfg = StackConfig(heads=("svr", "enet"), n_trials=2, tune_folds=3, pca=None, n_jobs=1)
    model = fit_stack(X[tr], y[tr], groups[tr], blocks, cfg)
    probe = GeneratorProbe(blocks=blocks, pca=None).fit(X[tr])
    probed = ProbedModel(model, probe)
    X_hidden = hide(X[te], slice(None))
    blind, with_probe, truth = (main_score(p, y[te]) for p in
                                (model.predict(X_hidden), probed.predict(X_hidden), model.predict(X[te])))
    assert with_probe > blind + 0.1 and with_probe > truth - 0.1
    np.testing.assert_array_equal(probed.predict(X[te]), model.predict(X[te]))  # known generators: untouched
    folder = bundle.save_bundle(tmp_path / "m", probed, {"track": "video", "target": {"name": "mos"},
                                                          "features": [], "n_features": X.shape[1]})
    loaded, _ = bundle.load_bundle(folder)
    np.testing.assert_array_equal(loaded.predict(X_hidden), probed.predict(X_hidden))
    with pytest.raises(ValueError, match="fill must be"):
        ProbedModel(model, probe, fill="some")


def test_fit_with_generator_probe_fills_hidden_generators(tmp_path):
    import json

    import pandas as pd

    from features_store import FeatureStore, Manifest
    from regressors.cli import main
    from regressors.workflow import load_model_any

    rng = np.random.default_rng(0)
    n_train, n_test = 240, 40
    n = n_train + n_test
    gens = np.array(["A", "B", "C"])[rng.integers(0, 3, n)]
    gid = np.searchsorted(["A", "B", "C"], gens)
    pix = rng.normal(size=(n, 6)) + 2.0 * np.eye(3)[gid] @ rng.normal(size=(3, 6))
    mos = np.array([1.0, 2.0, 3.0])[gid] + 0.3 * pix[:, 3] + 0.2 * rng.normal(size=n)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    mos[split == "test"] = np.nan
    onehot = np.zeros((n, 4), np.float32)
    onehot[np.arange(n), gid] = 1.0
    onehot[split == "test"] = [0, 0, 0, 1]  # test names hide the generator (as on T2VQA-DB)
    df = pd.DataFrame({"item_id": [f"{i:04d}.mp4" for i in range(n)], "path": "", "prompt": "p",
                       "generator": np.where(split == "test", None, gens), "mos": mos, "split": split,
                       "group": [f"g{i % 60}" for i in range(n)]})
    df["name"] = df["item_id"]
    store = tmp_path / "s.h5"
    with FeatureStore(store, mode="a") as st:
        st.set_manifest(Manifest(df, tmp_path, "toy"))
        st.ensure_config("generator-aaaaaaaaaaaa", {"name": "generator"}, name="generator",
                         feature_names=["generator=A", "generator=B", "generator=C", "generator_unknown"])
        st.write("generator-aaaaaaaaaaaa", np.arange(n), onehot)
        st.ensure_config("nss-bbbbbbbbbbbb", {"name": "nss"}, name="nss")
        st.write("nss-bbbbbbbbbbbb", np.arange(n), pix.astype(np.float32))
        st.checkpoint()
    args = ["fit", "--track", "video", "--store", str(store), "--extractors", "generator,nss", "--trials", "0",
            "--folds", "3", "--tune-folds", "2", "--pca", "0", "--bootstrap", "0", "--nested", "split", "--heads",
            "enet", "--jobs", "1", "--no-select-blocks"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "probed"), "--generator-probe"]) == 0
    m = json.loads((tmp_path / "probed" / "metrics.json").read_text())
    assert m["generator_probe"]["filled"] == {"test": n_test} and m["generator_probe"]["oof_accuracy"] > 0.9
    preds = {r: pd.read_csv(tmp_path / r / "predictions.csv").query("split == 'test'")["prediction"].to_numpy()
             for r in ("plain", "probed")}
    truth = np.array([1.0, 2.0, 3.0])[gid[split == "test"]] + 0.3 * pix[split == "test", 3]
    assert main_score(preds["probed"], truth) > main_score(preds["plain"], truth) + 0.1
    model, _ = load_model_any(tmp_path / "probed")  # the bundle fills hidden generators too
    assert isinstance(model, ProbedModel)
