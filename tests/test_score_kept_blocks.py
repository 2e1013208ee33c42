"""Scoring honours nested block selection: the bundle names the blocks its model reads, `aigcq score` computes
only those (a dropped block's extractor is never built) and gives the training run's predictions; a model that
reads only the prompt/generator says so when trained, in its card and when loaded for scoring."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from aigcq import Predictor
from aigcq.score import main as score_main
from regressors.bundle import read_info

# block selection stays on (the point here); the rest as small as test_score.py's fits
FAST_FIT = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet",
            "--jobs", "1"]
WARNING = "this model scores from the prompt/generator only"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo store (nss, prompt_minilm, generator) with an unlabelled test split the fit predicts."""
    from experiments.demo_data import DemoConfig, build_demo_store

    root = tmp_path_factory.mktemp("kept")
    cfg = DemoConfig(n_sources=6, crops_per_source=2, size=48, test_sources=1)
    store = build_demo_store(root / "demo", cfg, extractors=("nss", "prompt_minilm", "generator"))
    return root, store, pd.read_csv(root / "demo" / "data" / "labels.csv")


def _fit(root, store, name: str, extractors: str):
    """Train with block selection on; (run folder, what the fit printed on stderr)."""
    from regressors.cli import main

    run, err = root / name, io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["fit", "--track", "image", "--store", str(store), "--out", str(run), "--extractors", extractors,
                   *FAST_FIT])
    assert rc == 0, err.getvalue()[-2000:]
    return run, err.getvalue()


@pytest.fixture(scope="module")
def pixel_run(demo):
    """prompt_minilm first, then nss: selection drops the prompt (it carries nothing on 10 photos), keeps nss."""
    root, store, _ = demo
    run, err = _fit(root, store, "pixels", "prompt_minilm,nss")
    info = read_info(run / "model")
    assert [f["block"] for f in info["features"]] == ["prompt_minilm", "nss"]
    assert info["kept_blocks"] == ["nss"], "the demo's selection no longer drops the prompt: pick another setup"
    return run, err


@pytest.fixture
def built(monkeypatch):
    """Names of the extractors the scorer builds."""
    import extractors.registry as registry

    names, real = [], registry.get_extractor

    def spy(spec, *a, **k):
        names.append(spec["name"])
        return real(spec, *a, **k)

    monkeypatch.setattr(registry, "get_extractor", spy)
    return names


def _test_items(root, labels):
    test = labels[labels["split"] == "test"]
    return test, [str(root / "demo" / "data" / p) for p in test["path"]]


def test_a_dropped_block_is_never_computed_and_scores_equal_the_training_run(demo, pixel_run, built, tmp_path):
    root, store, labels = demo
    run, err = pixel_run
    assert "warning" not in err  # nss reads the pixels
    card = (run / "model" / "MODEL.md").read_text()
    assert "nested block selection dropped prompt_minilm" in card and "| no (dropped" in card and "Warning" not in card

    test, paths = _test_items(root, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no metadata-only warning for this model
        p = Predictor.load(run / "model", cache=tmp_path / "c.h5", progress=False)
    df = p.score(paths, prompts=test["prompt"].tolist(), generators=test["generator"].tolist())
    assert (df["status"] == "ok").all() and built == ["nss"] and set(p.computed) == {"nss"}
    # the final model's own predictions of these items in the fit (read from the store's features)
    fit = pd.read_csv(run / "predictions.csv").set_index("item_id").loc[test["item_id"]]
    assert (fit["source"] == "unlabelled").all()
    np.testing.assert_allclose(df["score"], fit["prediction"], rtol=0, atol=1e-9)
    assert df["score"].nunique() > 1


def test_zeros_in_a_dropped_block_change_no_prediction(demo, pixel_run):
    from regressors.data import load_track
    from regressors.workflow import load_model_any

    _, store, _ = demo
    model, info = load_model_any(pixel_run[0] / "model")
    X = load_track(str(store), [f["key"] for f in info["features"]], split="train", target="mos").X
    a, b = info["features"][0]["columns"]  # prompt_minilm, dropped
    zeroed = X.copy()
    zeroed[:, a:b] = 0.0
    np.testing.assert_array_equal(model.predict(zeroed), model.predict(X))


def test_predict_needs_only_the_kept_blocks_in_the_store(demo, pixel_run, tmp_path, capsys):
    """`aigcq predict` on a store that lacks the dropped block (here: one built with nss only) gives the fit's
    predictions; a store that lacks a kept block is still refused."""
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    cfg = DemoConfig(n_sources=6, crops_per_source=2, size=48, test_sources=1)  # the same items as `demo`
    nss_only = build_demo_store(tmp_path / "nss", cfg, extractors=("nss",))
    assert main(["predict", "--model", str(pixel_run[0] / "model"), "--store", str(nss_only), "--split", "test",
                 "--out", str(tmp_path / "pred"), "--bootstrap", "0"]) == 0
    got = pd.read_csv(tmp_path / "pred" / "predictions.csv").set_index("item_id")
    fit = pd.read_csv(pixel_run[0] / "predictions.csv").set_index("item_id").loc[got.index]
    np.testing.assert_allclose(got["prediction"], fit["prediction"], rtol=0, atol=1e-9)
    prompt_only = build_demo_store(tmp_path / "prompt", cfg, extractors=("prompt_minilm",))
    capsys.readouterr()
    assert main(["predict", "--model", str(pixel_run[0] / "model"), "--store", str(prompt_only), "--split", "test",
                 "--out", str(tmp_path / "pred2"), "--bootstrap", "0"]) == 2
    assert "nss" in capsys.readouterr().err


def test_a_bundle_without_kept_blocks_computes_every_block_as_before(demo, pixel_run, built, tmp_path):
    root, _, labels = demo
    from regressors.bundle import skops_io

    sio = skops_io()

    from aigcq.bundle_cmd import main as bundle_main
    from regressors.bundle import sha256_file, trusted_types
    from regressors.bundle_integrity import DEPENDS_ATTR

    legacy = tmp_path / "legacy"
    shutil.copytree(pixel_run[0] / "model", legacy)
    # a bundle as versions before kept_blocks (and before the integrity records) wrote it ...
    model = sio.load(legacy / "model.skops", trusted=trusted_types())
    delattr(model, DEPENDS_ATTR)
    sio.dump(model, legacy / "model.skops")
    meta = json.loads((legacy / "bundle.json").read_text())
    del meta["kept_blocks"], meta["manifest"]
    meta.update(format_version=1, files={"model.skops": sha256_file(legacy / "model.skops")})
    (legacy / "bundle.json").write_text(json.dumps(meta))
    assert bundle_main(["upgrade", str(legacy)]) == 0  # ... recorded by its owner (aigcq bundle upgrade)
    test, paths = _test_items(root, labels)
    p = Predictor.load(legacy, cache=tmp_path / "c.h5", progress=False)
    assert p.kept == ["prompt_minilm", "nss"]
    df = p.score(paths, prompts=test["prompt"].tolist(), generators=test["generator"].tolist())
    assert sorted(built) == ["nss", "prompt_minilm"] and (df["status"] == "ok").all()
    fit = pd.read_csv(pixel_run[0] / "predictions.csv").set_index("item_id").loc[test["item_id"]]
    np.testing.assert_allclose(df["score"], fit["prediction"], rtol=0, atol=1e-9)


def test_a_prompt_and_generator_model_warns_when_trained_in_its_card_and_when_scoring(demo, built, tmp_path, capsys):
    root, store, labels = demo
    run, err = _fit(root, store, "meta", "prompt_minilm,generator")
    info = read_info(run / "model")
    assert {f["kind"] for f in info["features"]} == {"text", "meta"}
    assert f"warning: {WARNING}" in err and "ignores the media content" in err
    assert f"**Warning: {WARNING}" in (run / "model" / "MODEL.md").read_text()
    assert json.loads((run / "metrics.json").read_text())["warnings"][0].startswith(WARNING)

    with pytest.warns(UserWarning, match=WARNING):
        Predictor.load(run / "model", cache=tmp_path / "c.h5", progress=False)
    # two different images under one prompt and generator: one score, as the warning says
    test, _ = _test_items(root, labels)
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(root / "demo" / "data" / x) for x in test["path"][:2]],
                  "prompt": test["prompt"].iloc[0], "generator": test["generator"].iloc[0]}).to_csv(listing, index=False)
    capsys.readouterr()
    rc = score_main([str(run / "model"), str(listing), "--cache", str(tmp_path / "c.h5"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err.count(WARNING) == 1 and f"warning: {WARNING}" in err
    scores = pd.read_csv(io.StringIO(out))["score"]
    assert len(scores) == 2 and scores.iloc[0] == scores.iloc[1]
    assert set(built) <= {f["name"] for f in info["features"] if f["block"] in info["kept_blocks"]}


def test_the_blocks_read_are_the_kept_ones_plus_what_a_generator_probe_reads():
    from types import SimpleNamespace

    from regressors.generator_probe import GeneratorProbe, ProbedModel
    from regressors.heads import blocks_from_dims
    from regressors.workflow import _blocks_read

    blocks = blocks_from_dims({"generator": 4, "nss": 6, "prompt": 12})
    stack = SimpleNamespace(info={"block_selection": {"kept": ["generator", "prompt"]}})
    assert _blocks_read(stack, blocks, 22) == ["generator", "prompt"]
    assert _blocks_read(SimpleNamespace(info={}), blocks, 22) == ["generator", "nss", "prompt"]  # selection off
    # the probe fills an unknown generator from every content block, the dropped nss included
    assert _blocks_read(ProbedModel(stack, GeneratorProbe(blocks=blocks)), blocks, 22) == ["generator", "nss", "prompt"]
    only_nss = SimpleNamespace(info={"block_selection": {"kept": ["nss"]}})  # no generator block read: no probe either
    assert _blocks_read(ProbedModel(only_nss, GeneratorProbe(blocks=blocks)), blocks, 22) == ["nss"]


def test_predict_places_a_kept_block_by_its_store_key_not_its_name():
    """Two configurations of one extractor are named by their keys at fit time; loaded alone, the kept one is
    named by the extractor. Its columns must still land in its place (they were zeros, silently)."""
    from types import SimpleNamespace

    from regressors.workflow import _model_columns

    X = np.arange(12.0).reshape(4, 3)
    data = SimpleNamespace(X=X, blocks={"nss": [0, 3]}, keys={"nss": "nss-bbb"})
    info = {"features": [{"block": "nss-aaa", "key": "nss-aaa", "dim": 2}, {"block": "nss-bbb", "key": "nss-bbb", "dim": 3}],
            "kept_blocks": ["nss-bbb"]}
    np.testing.assert_array_equal(_model_columns(data, info), np.hstack([np.zeros((4, 2)), X]))
