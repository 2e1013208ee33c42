"""`python -m regressors fit|predict` end to end on a tiny synthetic feature store."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features_store import FeatureStore, Manifest
from regressors import bundle
from regressors.cli import main


def _make_store(path, n_train=240, n_val=40, n_test=30, seed=0, with_prompt=True, gen_key="generator-aaaaaaaaaaaa"):
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    gens = np.array(["A", "B", "C"])[rng.integers(0, 3, n)]
    prompt_id = rng.integers(0, 90, n)
    emb = rng.normal(size=(90, 8))[prompt_id]
    mos = np.select([gens == "A", gens == "B"], [1.0, 2.0], 3.0) + np.sin(emb[:, 0]) + 0.2 * rng.normal(size=n)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    mos[split == "test"] = np.nan  # test unlabelled; val labelled (a held-out split)
    df = pd.DataFrame({"item_id": [f"{g}_{i:04d}.png" for i, g in enumerate(gens)], "path": "",
                       "prompt": [f"prompt {p}" for p in prompt_id], "generator": gens, "mos": mos, "split": split})
    df["name"] = df["item_id"]
    df["group"] = df["prompt"]
    onehot = (gens[:, None] == np.array(["A", "B", "C"])[None]).astype(np.float32)
    with FeatureStore(path, mode="a") as st:
        st.set_manifest(Manifest(df, path.parent, "toy"))
        st.ensure_config(gen_key, {"name": "generator", "v": gen_key}, name="generator")
        st.write(gen_key, np.arange(n), onehot)
        if with_prompt:
            st.ensure_config("prompt_minilm-bbbbbbbbbbbb", {"name": "prompt_minilm"}, name="prompt_minilm")
            st.write("prompt_minilm-bbbbbbbbbbbb", np.arange(n), emb.astype(np.float32))
        st.checkpoint()
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    store = _make_store(root / "toy.h5")
    out = root / "out"
    rc = main(["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm",
               "--out", str(out), "--trials", "2", "--folds", "3", "--tune-folds", "3", "--pca", "0",
               "--bootstrap", "50", "--nested", "split"])
    assert rc == 0
    return store, out


def test_fit_writes_everything(fitted):
    store, out = fitted
    m = json.loads((out / "metrics.json").read_text())
    for k in ("srcc", "plcc", "main", "n", "krcc", "rmse", "ci"):
        assert k in m, k
    assert m["main"] > 0.5 and 0 < m["n"] < 240  # nested=split: tuning items are not scored
    assert set(m["heads"]) == {"svr", "enet", "lgbm", "knn"}
    assert set(m["blocks"]) == {"generator", "prompt_minilm"}
    assert set(m["per_generator"]) == {"A", "B", "C"}
    assert "val" in m["heldout"] and m["heldout"]["val"]["n"] == 40
    pred = pd.read_csv(out / "predictions.csv")
    assert {"item_id", "prediction", "target"} <= set(pred.columns) and len(pred) == 310
    lines = (out / "submission" / "output.txt").read_text().splitlines()
    assert len(lines) == 30 and all(len(line.split(",")) == 2 for line in lines)
    float(lines[0].split(",")[1])
    readme = (out / "submission" / "readme.txt").read_text().splitlines()
    assert len(readme) == 5 and readme[0].startswith("runtime per image [s] : ")
    assert "regression time only" in readme[4]
    assert readme[1] == "CPU[1] / GPU[0] : 1" and "records no extraction device" in readme[4]
    assert (out / "scatter.png").stat().st_size > 1000
    assert "| stack (cross-validated) |" in (out / "report.md").read_text()
    info = json.loads((out / "model" / "bundle.json").read_text())
    assert [f["key"] for f in info["features"]] == ["generator-aaaaaaaaaaaa", "prompt_minilm-bbbbbbbbbbbb"]
    assert info["target"]["name"] == "mos" and info["training"]["items"] == 240
    assert (out / "model" / "MODEL.md").read_text().startswith("# image quality model")
    assert not list(out.glob("*.pkl"))  # no pickle is written any more


def test_predict_and_checksum(fitted, tmp_path):
    store, out = fitted
    assert main(["predict", "--model", str(out / "model"), "--store", str(store), "--split", "test",
                 "--out", str(tmp_path / "p")]) == 0
    assert len((tmp_path / "p" / "submission" / "output.txt").read_text().splitlines()) == 30
    # a tampered model file is refused before it is read
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out / "model", bad)
    with open(bad / "model.skops", "ab") as f:
        f.write(b"x")
    with pytest.raises(bundle.BundleError, match="does not match"):
        bundle.load_bundle(bad)


def test_submission_readme_uses_the_recorded_extraction_time_and_device(fitted, tmp_path):
    import shutil

    store, out = fitted
    timed = tmp_path / "timed.h5"
    shutil.copy(store, timed)
    with FeatureStore(timed, mode="a") as st:
        st.add_timing("generator-aaaaaaaaaaaa", 0.5, 100, device="cpu")
        st.add_timing("prompt_minilm-bbbbbbbbbbbb", 3.0, 100, device="cuda:0")
        st.checkpoint()
    assert main(["predict", "--model", str(out / "model"), "--store", str(timed), "--split", "test",
                 "--out", str(tmp_path / "p"), "--bootstrap", "0"]) == 0
    readme = (tmp_path / "p" / "submission" / "readme.txt").read_text().splitlines()
    runtime = float(readme[0].split(":")[1])
    assert 0.035 <= runtime < 0.1  # 0.005 + 0.03 s per item recorded by extraction, plus regression time
    assert readme[1] == "CPU[1] / GPU[0] : 0"  # one feature was extracted on a GPU
    assert "extraction on cpu, cuda:0, heads on CPU" in readme[4]
    assert "+ SVR/ElasticNet/LightGBM/kNN + one head per feature block stacked" in readme[4]  # the model's heads


def test_predict_refuses_store_without_the_features(fitted, tmp_path, capsys):
    store, out = fitted
    other = _make_store(tmp_path / "other.h5", with_prompt=False, gen_key="generator-cccccccccccc")
    rc = main(["predict", "--model", str(out), "--store", str(other), "--split", "test",
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "prompt_minilm-bbbbbbbbbbbb" in err and "no 'prompt_minilm' features" in err
    assert "only with another configuration: generator-cccccccccccc" in err


def test_an_sqlite_storage_has_its_tables_before_the_searches_start(tmp_path, monkeypatch):
    """``--storage sqlite:///studies.db`` (the help's example): parallel searches (loky workers, Ray tasks)
    opening a new database at once raced to create its tables and the fit died with Optuna's traceback
    ("table studies already exists", 1 run in 2 with --jobs 2 here). The tables are made first, once."""
    import sqlite3

    import regressors.workflow as workflow

    seen = {}

    def fit_command(*args, **kwargs):  # stands for the searches: what they find when they start
        with sqlite3.connect(tmp_path / "studies.db") as db:
            seen["tables"] = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}

    monkeypatch.setattr(workflow, "fit_command", fit_command)
    store = _make_store(tmp_path / "toy.h5")
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(tmp_path / "o"),
                 "--storage", f"sqlite:///{tmp_path / 'studies.db'}"]) == 0
    assert {"studies", "trials", "alembic_version"} <= seen["tables"]


def test_the_fit_options_of_the_defaults_page_reach_the_model(tmp_path):
    """--meta-learner, --final-tuning, --select-margin and --no-bound-scores are recorded in the bundle and used:
    an unbounded model says so in MODEL.md, and its 'best' meta-learner weights exactly one head."""
    store = _make_store(tmp_path / "toy.h5")
    out = tmp_path / "out"
    rc = main(["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm",
               "--out", str(out), "--trials", "2", "--folds", "3", "--tune-folds", "3", "--pca", "0",
               "--bootstrap", "50", "--nested", "split", "--meta-learner", "best", "--final-tuning", "retune",
               "--select-margin", "0.05", "--no-bound-scores"])
    assert rc == 0
    info = json.loads((out / "model" / "bundle.json").read_text())
    cfg = info["config"]
    assert (cfg["meta_learner"], cfg["final_tuning"], cfg["select_margin"], cfg["bound_scores"]) == \
        ("best", "retune", 0.05, False)
    assert sorted(w for w in info["meta_weights"].values() if w) == [1.0]
    assert "Scores are not bounded" in (out / "model" / "MODEL.md").read_text()
