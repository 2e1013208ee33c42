"""Ablation on a tiny embedded store: same folds for every row, intervals, cache reuse, outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import ablate
from experiments.ablate import configurations, load_blocks, run_ablation
from experiments.demo_data import DemoConfig, build_demo_store

EXS = ["nss", "prompt_minilm", "generator"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return build_demo_store(out, DemoConfig(n_sources=8, crops_per_source=2, size=64), extractors=tuple(EXS))


def test_configurations():
    confs = configurations(["a", "b", "c"])
    assert [c[0] for c in confs] == ["all", "only a", "only b", "only c", "all - a", "all - b", "all - c"]
    assert confs[4][2] == ["b", "c"]
    assert [c[0] for c in configurations(["a", "b"])] == ["all", "only a", "only b"]  # no 'minus' rows for 2
    assert [c[0] for c in configurations(["a"])] == ["all"]


def test_ablation_table_outputs_and_same_folds(store, tmp_path):
    out = tmp_path / "abl"
    res = run_ablation(store, EXS, target="mos", trials=0, n_boot=100, out=out, track="image", progress=False)
    t = res.table
    assert list(t["config"]) == [c[0] for c in configurations(EXS)]
    assert (t["n"] == 96).all()  # 8 photos x 2 crops x 6 variants, every row on the same items
    assert (t["main_lo"] <= t["main"]).all() and (t["main"] <= t["main_hi"]).all()
    assert t["delta_main"].iloc[1:].notna().all() and np.isnan(t["delta_main"].iloc[0])
    for f in ("ablation.csv", "ablation.md", "ablation.png", "predictions.csv", "per_generator.csv"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "ablation.md").read_text()
    assert "| only nss |" in md and "SRCC within each generator" in md
    assert set(res.per_generator["generator"]) == {"fakegen-blur", "fakegen-noise", "fakegen-jpeg", "fakegen-contrast",
                                                   "fakegen-colour", "fakegen-pristine"}

    # "only nss" must equal a hand-made CV with the same folds and the default SVR head
    from regressors.heads import make_head
    from regressors.tuning import make_folds

    b = res.blocks
    X, bmap = b.matrix(["nss"])
    oof = np.zeros(len(b.y))
    for tr, te in make_folds(len(b.y), b.groups, 5, 0, "grouped"):
        assert len(set(b.groups[tr]) & set(b.groups[te])) == 0  # grouped by source photo
        oof[te] = make_head("svr", blocks=bmap).fit(X[tr], b.y[tr]).predict(X[te])
    np.testing.assert_allclose(res.predictions["pred[only nss]"], oof, rtol=1e-6, atol=1e-9)


def test_pixels_beat_the_prompt_on_unseen_photos(store):
    # the synthetic rating depends on the degradation; under grouped CV the prompt only names
    # the (unseen) photo, so NSS statistics must rank far better than the prompt embedding
    res = run_ablation(store, ["nss", "prompt_minilm"], target="mos", trials=0, n_boot=0, progress=False)
    by = res.table.set_index("config")
    assert by.loc["only nss", "srcc"] > by.loc["only prompt_minilm", "srcc"] + 0.2


def test_tuned_params_are_cached_and_reused(store, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    first = run_ablation(store, ["nss", "generator"], trials=2, folds=3, n_boot=0, out=out, progress=False)
    cache = (out / "tuned_params.json").read_text()
    assert cache.count('"head": "svr"') == 3 * 3  # 3 configurations x 3 outer folds

    import regressors.tuning

    def boom(*a, **k):
        raise AssertionError("tuned again although the cache holds these parameters")

    monkeypatch.setattr(regressors.tuning, "tune_head", boom)  # in this process: run the tasks here (n_jobs=1)
    second = run_ablation(store, ["nss", "generator"], trials=2, folds=3, n_boot=0, out=out, progress=False, n_jobs=1)
    pd.testing.assert_frame_equal(first.predictions, second.predictions)
    # another budget is another cache entry: it must tune
    with pytest.raises(AssertionError, match="tuned again"):
        run_ablation(store, ["nss", "generator"], trials=3, folds=3, n_boot=0, out=out, progress=False, n_jobs=1)


def test_workers_give_what_one_process_gives(store):
    """(configuration, fold) tasks on 2 workers, the smaller selecting configurations reusing the full set's
    subset scores: the same predictions and blocks read as one process."""
    exs = ["nss", "prompt_minilm", "generator"]
    one = run_ablation(store, exs, trials=2, folds=3, n_boot=0, progress=False, n_jobs=1)
    two = run_ablation(store, exs, trials=2, folds=3, n_boot=0, progress=False, n_jobs=2)
    pd.testing.assert_frame_equal(one.predictions, two.predictions, check_exact=False, rtol=0, atol=1e-12)
    assert list(one.table["kept"]) == list(two.table["kept"])


def test_missing_extractor_is_a_clear_error(store):
    with pytest.raises(KeyError, match="effnet_lite0.*make features"):
        load_blocks(store, ["nss", "effnet_lite0"], track="image")
    with pytest.raises(ValueError, match="no extractors"):
        load_blocks(store, [])


def test_describe_store_and_cli(store, tmp_path, capsys):
    info = ablate.describe_store(store)
    assert sorted(info["extractor"]) == sorted(EXS) and (info["done"] == 96).all()
    rc = ablate.main(["--store", str(store), "--extractors", "nss,generator", "--trials", "0", "--n-boot", "50",
                      "--out", str(tmp_path / "cli"), "--track", "image"])
    assert rc == 0 and (tmp_path / "cli" / "ablation.png").is_file()
    assert "| only generator |" in capsys.readouterr().out
