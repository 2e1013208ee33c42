"""The `generator` key depends on its configuration only; the vocabulary is data (store feature names, the model's)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from extractors.generator import onehot, remap_onehot, vocabulary_from_names
from extractors.registry import get_extractor
from extractors.runner import run_extraction
from features_store import FeatureStore, Manifest
from regressors.cli import main
from regressors.data import load_track

EMB = "emb-cccccccccccc"


def _store(path, gens, seed=0, n_train=120):
    rng = np.random.default_rng(seed)
    n = len(gens)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    base = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 2.5}
    mos = np.array([base[g] for g in gens]) + np.sin(emb[:, 0]) + 0.1 * rng.normal(size=n)
    split = np.where(np.arange(n) < n_train, "train", "test")
    df = pd.DataFrame({"item_id": [f"{seed}_{i}" for i in range(n)], "path": "", "generator": gens,
                       "prompt": [f"p{i % 40}" for i in range(n)], "mos": np.where(split == "train", mos, np.nan),
                       "split": split})
    m = Manifest(df, path.parent, f"ds{seed}")
    with FeatureStore(path, mode="a") as st:
        key = run_extraction(m, get_extractor("generator"), st, workers=0, progress=False).key
        st.ensure_config(EMB, {"name": "emb"}, name="emb")
        st.write(EMB, np.arange(n), emb)
    return key


def test_same_spec_on_two_datasets_gives_the_same_key(tmp_path):
    rng = np.random.default_rng(0)
    k1 = _store(tmp_path / "a.h5", list(rng.choice(["A", "B", "C"], 150)))
    k2 = _store(tmp_path / "b.h5", list(rng.choice(["B", "D"], 150)), seed=1)
    assert k1 == k2 == get_extractor("generator").key()
    with FeatureStore(tmp_path / "a.h5", mode="r") as a, FeatureStore(tmp_path / "b.h5", mode="r") as b:
        assert vocabulary_from_names(a.feature_names(k1)) == ["A", "B", "C"]
        assert vocabulary_from_names(b.feature_names(k2)) == ["B", "D"]
    # an explicit vocabulary is configuration: its own key
    assert get_extractor("generator", generators=["A", "B"]).key() != k1


def test_a_store_keeps_its_vocabulary_and_refuses_a_new_generator(tmp_path):
    path = tmp_path / "a.h5"
    key = _store(path, ["A", "B"] * 20)
    df = pd.DataFrame({"item_id": ["0_0", "new"], "path": "", "generator": ["A", "C"], "prompt": "p0", "mos": 1.0})
    with FeatureStore(path, mode="a") as st:
        run_extraction(Manifest(df.iloc[:1], tmp_path, "ds0"), get_extractor("generator"), st, workers=0,
                       progress=False)  # the stored vocabulary covers it: kept, nothing recomputed
        assert st.config(key)["dim"] == 3
        with pytest.raises(ValueError, match=r"vocabulary \['A', 'B'\]; this dataset also names \['C'\]"):
            run_extraction(Manifest(df, tmp_path, "ds0"), get_extractor("generator"), st, workers=0, progress=False)


def test_remap_onto_a_model_vocabulary():
    block = onehot(["B", "D", None, "B"], ["B", "D"])
    out = remap_onehot(block, ["B", "D"], ["A", "B", "C"])
    np.testing.assert_array_equal(out, onehot(["B", "D", None, "B"], ["A", "B", "C"]))
    assert out[1, -1] == 1 and out[2, -1] == 1  # unseen and missing generators: the unknown flag


def test_a_model_predicts_on_another_dataset_through_its_vocabulary(tmp_path, capsys):
    rng = np.random.default_rng(0)
    key = _store(tmp_path / "a" / "a.h5", list(rng.choice(["A", "B", "C"], 160)))
    _store(tmp_path / "b" / "b.h5", list(rng.choice(["B", "D"], 160)), seed=1)
    run = tmp_path / "run"
    assert main(["fit", "--track", "image", "--store", str(tmp_path / "a" / "a.h5"), "--extractors",
                 f"generator,{EMB}", "--out", str(run), "--trials", "0", "--folds", "3", "--tune-folds", "2",
                 "--pca", "0", "--bootstrap", "0", "--heads", "enet", "--jobs", "1"]) == 0
    import json

    info = json.loads((run / "model" / "bundle.json").read_text())
    assert info["generator_vocabulary"] == ["A", "B", "C"]
    assert info["features"][0]["key"] == key and info["features"][0]["vocabulary"] == ["A", "B", "C"]
    assert main(["predict", "--model", str(run), "--store", str(tmp_path / "b" / "b.h5"), "--out",
                 str(tmp_path / "p"), "--bootstrap", "0"]) == 0
    data = load_track(tmp_path / "b" / "b.h5", [key], split="test", target=None, vocabularies={key: ["A", "B", "C"]})
    np.testing.assert_array_equal(data.X, onehot(data.generators, ["A", "B", "C"]))
    assert data.blocks == {"generator": [0, 4]}
