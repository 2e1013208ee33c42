"""Issue 22 part 4: targets that make no sense are refused; an extreme scale is fitted, not refused.

Before: mos x 1e-300 gave exit 0 and main 0.08 (against 0.69 for mos); one MOS of 1e308 passed `validate` and `regress`
failed with raw scikit-learn errors; an all-NaN label column was reported as absent; a constant target or 3 labelled items
gave exit 0, main NaN and a model written.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features_store import FeatureStore, Manifest
from regressors.cli import main

FAST = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--pca", "0", "--bootstrap", "0", "--nested", "split",
        "--heads", "svr,enet", "--jobs", "1", "--fixed-heads", "", "--block-head", "none"]
N = 120


def _labels(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    gens = np.array(["A", "B", "C"])[rng.integers(0, 3, N)]
    prompt_id = rng.integers(0, 40, N)
    emb = rng.normal(size=(40, 6))[prompt_id]
    mos = np.select([gens == "A", gens == "B"], [1.5, 2.5], 3.5) + np.sin(emb[:, 0]) + 0.2 * rng.normal(size=N)
    df = pd.DataFrame({"item_id": [f"{g}_{i:04d}.png" for i, g in enumerate(gens)], "path": "",
                       "prompt": [f"prompt {p}" for p in prompt_id], "generator": gens, "mos": mos, "split": "train"})
    df["group"] = df["prompt"]
    df["tiny"] = mos * 1e-300
    df["huge"] = mos * 1e300
    df["pow2"] = np.ldexp(mos, -1000)  # an exact power-of-two scaling of mos (9.3e-302 x mos)
    df["withinf"] = mos
    df.loc[3, "withinf"] = np.inf
    df["outlier"] = mos
    df.loc[5, "outlier"] = 1e308
    df["const"] = 3.0
    df["allnan"] = np.nan
    df["few"] = np.nan
    df.loc[:2, "few"] = [1.0, 2.0, 3.0]
    return df, emb


COLUMNS = ["tiny", "huge", "pow2", "withinf", "outlier", "const", "allnan", "few"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    df, emb = _labels()
    path = root / "labels.h5"
    gens = df["generator"].to_numpy()
    onehot = (gens[:, None] == np.array(["A", "B", "C"])[None]).astype(np.float32)
    with FeatureStore(path, mode="a") as st:
        st.set_manifest(Manifest(df, root, "targets", label_columns=COLUMNS))
        st.ensure_config("generator-aaaaaaaaaaaa", {"name": "generator"}, name="generator")
        st.write("generator-aaaaaaaaaaaa", np.arange(N), onehot)
        st.ensure_config("prompt_minilm-bbbbbbbbbbbb", {"name": "prompt_minilm"}, name="prompt_minilm")
        st.write("prompt_minilm-bbbbbbbbbbbb", np.arange(N), emb.astype(np.float32))
        st.checkpoint()
    return path


def _fit(store, out, target, capsys):
    capsys.readouterr()
    rc = main(["fit", "--track", "image", "--store", str(store), "--out", str(out), "--target", target, *FAST])
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.startswith("error:")], err


@pytest.mark.parametrize("target, expected", [
    ("withinf", "1 value(s) not finite ("),
    ("outlier", "astronomically far from the others"),
    ("const", "is constant (3 for all 120 labelled items)"),
    ("few", "has 3 labelled item(s); a cross-validated fit needs at least 10"),
    ("allnan", "label column 'allnan' has no values (all 120 items empty or NaN)"),
])
def test_regress_refuses_a_nonsense_target_in_one_line_and_writes_nothing(store, tmp_path, capsys, target, expected):
    rc, errors, err = _fit(store, tmp_path / "run", target, capsys)
    assert rc == 2 and len(errors) == 1 and expected in errors[0], err[-1500:]
    if target == "withinf":
        assert "_0003.png: inf" in errors[0]
    assert "Traceback" not in err and "no label column" not in err
    assert not (tmp_path / "run").exists()


def test_an_extreme_scale_is_fitted_like_the_ordinary_one(store, tmp_path, capsys):
    runs = {}
    for target in ("mos", "pow2", "tiny", "huge"):
        rc, errors, err = _fit(store, tmp_path / target, target, capsys)
        assert rc == 0, err[-2000:]
        runs[target] = json.loads((tmp_path / target / "metrics.json").read_text())
    ref = runs["mos"]["main"]
    assert ref > 0.5
    ref_pred = pd.read_csv(tmp_path / "mos" / "predictions.csv")["prediction"].to_numpy()
    # a power-of-two multiple of mos holds the same digits: the same fit exactly
    assert runs["pow2"]["main"] == ref
    pred = pd.read_csv(tmp_path / "pow2" / "predictions.csv")["prediction"].to_numpy()
    np.testing.assert_array_equal(np.ldexp(pred, 1000), ref_pred)
    # x 1e-300 and x 1e300 round each value once (relative 1e-16): the same fit up to that rounding
    for target, factor in (("tiny", 1e-300), ("huge", 1e300)):
        assert runs[target]["main"] == pytest.approx(ref, abs=2e-3), target
        assert runs[target]["rmse"] == pytest.approx(runs["mos"]["rmse"] * factor, rel=2e-2)
        pred = pd.read_csv(tmp_path / target / "predictions.csv")["prediction"].to_numpy()
        np.testing.assert_allclose(pred / factor, ref_pred, rtol=2e-2)
        info = json.loads((tmp_path / target / "model" / "bundle.json").read_text())
        assert info["target"]["sd"] == pytest.approx(np.std(_labels()[0]["mos"]) * factor, rel=1e-9)
    # the bundle scores in the target's own units
    from regressors.workflow import load_model_any

    X = np.hstack([np.eye(3)[[0, 1, 2]], np.zeros((3, 6))])
    m_ref, _ = load_model_any(tmp_path / "mos" / "model")
    m_pow2, _ = load_model_any(tmp_path / "pow2" / "model")
    np.testing.assert_array_equal(np.ldexp(m_pow2.predict(X), 1000), m_ref.predict(X))


def test_ordinary_targets_are_not_rescaled_at_all():
    from regressors import target_scale

    rng = np.random.default_rng(0)
    for y in (rng.uniform(1, 5, 50), rng.uniform(0, 100, 50), rng.normal(size=50), rng.uniform(0, 1, 50),
              rng.integers(0, 10_000, 50).astype(float), 1e6 + rng.uniform(1, 5, 50), rng.uniform(0, 1e-5, 50)):
        assert target_scale.exponent(y) == 0
    for y, k_sign in ((rng.uniform(1, 5, 50) * 1e-300, 1), (rng.uniform(1, 5, 50) * 1e300, -1)):
        k = target_scale.exponent(y)
        assert np.sign(k) == k_sign and 0.25 <= np.ptp(target_scale.scale(y, k)) < 2
        np.testing.assert_array_equal(target_scale.unscale(target_scale.scale(y, k), k), y)  # exact


def _dataset(tmp_path, df: pd.DataFrame) -> str:
    df.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "data.yaml").write_text(
        "adapter: table\nname: targets\nlabels: labels.csv\nroot: .\n"
        "columns: {item_id: item_id, path: path, prompt: prompt, generator: generator, mos: mos, split: split, "
        "group: group}\n" f"label_columns: {COLUMNS}\n")
    return str(tmp_path / "data.yaml")


def test_validate_names_every_nonsense_label_column(tmp_path, capsys):
    from features_store.__main__ import main as fs_main

    df, _ = _labels()
    df["path"] = df["item_id"]
    df.loc[7, "mos"] = 1e308
    assert fs_main(["validate", _dataset(tmp_path, df), "--no-media"]) == 1
    out = capsys.readouterr().out
    assert "(row 7): MOS 1e+308 is astronomically far from the others" in out
    for col, what in (("withinf", "not finite"), ("outlier", "astronomically"), ("const", "constant"),
                      ("allnan", "no values"), ("few", "3 labelled item(s)")):
        assert any(f"label column {col!r}" in ln and what in ln for ln in out.splitlines()), (col, out)
    assert "tiny" not in out and "huge" not in out and "pow2" not in out  # an extreme scale alone is no problem
    # a clean dataset is still clean
    clean = df.drop(columns=["withinf", "outlier", "const", "allnan", "few"])
    clean.loc[7, "mos"] = 3.0
    clean.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "data.yaml").write_text((tmp_path / "data.yaml").read_text().replace(
        str(COLUMNS), "[tiny, huge, pow2]"))
    assert fs_main(["validate", str(tmp_path / "data.yaml"), "--no-media"]) == 0, capsys.readouterr().out


def test_ablate_refuses_a_constant_target_in_one_line(store, tmp_path, capsys):
    from experiments.ablate import main as ablate_main

    assert ablate_main(["--store", str(store), "--extractors", "generator,prompt_minilm", "--out",
                        str(tmp_path / "abl"), "--target", "const", "--trials", "0", "--n-boot", "0",
                        "--jobs", "1"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "is constant" in err[0]
