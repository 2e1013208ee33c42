"""Issue 12, regress/predict: no incomplete fit or submission, whole run folders, names checked first, no in-sample test."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features_store import FeatureStore
from regressors.cli import main
from test_regress_cli import _make_store

REPO = Path(__file__).resolve().parents[1]
FAST = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--pca", "0", "--bootstrap", "0", "--nested", "split",
        "--heads", "enet", "--jobs", "1"]


def _fit(store, out, *extra):
    return main(["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm",
                 "--out", str(out), *FAST, *extra])


def _drop_rows(store, key, rows, fail=False):
    """Make some items of ``key`` pending (or failed) again: a store another process is still filling."""
    with FeatureStore(store, mode="a") as st:
        cfg = st._cfg(key)
        if fail:
            st.fail(key, rows, ["ItemError: broken file"] * len(rows))
        else:
            cfg.status[rows] = 0
            cfg.dirty = True
        st.checkpoint()


@pytest.fixture()
def store(tmp_path):
    return _make_store(tmp_path / "toy.h5")


def test_fit_refuses_an_incomplete_training_split_naming_key_counts_and_command(store, tmp_path, capsys):
    _drop_rows(store, "prompt_minilm-bbbbbbbbbbbb", np.arange(10))
    _drop_rows(store, "prompt_minilm-bbbbbbbbbbbb", np.arange(10, 13), fail=True)
    assert _fit(store, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "split 'train' is incomplete" in err
    assert "prompt_minilm-bbbbbbbbbbbb: 227 of 240 items done, 10 pending, 3 failed" in err
    assert "fill: aigcq features --track image" in err and "--store" in err
    assert "why failed: python -m features_store errors" in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_allow_incomplete_fits_the_done_subset_and_never_writes_an_incomplete_submission(store, tmp_path, capsys):
    _drop_rows(store, "prompt_minilm-bbbbbbbbbbbb", np.arange(285, 290))  # test items (train 240 + val 40 + test 30)
    assert _fit(store, tmp_path / "run") == 2
    assert "split 'test' is incomplete, so its submission" in capsys.readouterr().err  # refused before fitting
    assert not (tmp_path / "run").exists()
    _drop_rows(store, "prompt_minilm-bbbbbbbbbbbb", np.arange(5))  # and some train items
    assert _fit(store, tmp_path / "run", "--allow-incomplete") == 2  # runs, but says the submission was refused
    err = capsys.readouterr().err
    assert "submission NOT written for split 'test'" in err
    run = tmp_path / "run"
    m = json.loads((run / "metrics.json").read_text())
    assert m["submissions"]["test"]["refused"].startswith("incomplete features")
    assert not (run / "submission").exists() and (run / "model" / "bundle.json").is_file()
    info = json.loads((run / "model" / "bundle.json").read_text())
    assert info["training"]["items"] == 235 and info["training"]["items_missing_features"][0]["pending"] == 5
    # predict refuses the incomplete split; with the flag it scores the done items but still writes no submission
    assert main(["predict", "--model", str(run), "--store", str(store), "--out", str(tmp_path / "p")]) == 2
    assert "split 'test' is incomplete" in capsys.readouterr().err
    assert main(["predict", "--model", str(run), "--store", str(store), "--out", str(tmp_path / "p"),
                 "--allow-incomplete"]) == 2
    assert "submission NOT written" in capsys.readouterr().err
    assert not (tmp_path / "p" / "submission").exists()
    assert len((tmp_path / "p" / "predictions.csv").read_text().splitlines()) == 1 + 25


def test_a_bad_submission_name_fails_before_any_fitting(tmp_path, monkeypatch, capsys):
    store = _make_store(tmp_path / "toy.h5")
    with FeatureStore(store, mode="a") as st:  # one test item named with a comma (the `name` column is its label)
        df = st.df.copy()
        df.loc[df.index[-1], "name"] = "bad,name.png"
        st._df = df
        st._rewrite()
    import regressors.workflow as wf

    def no_fit(*a, **k):
        raise AssertionError("cross-validation started although a submission name is invalid")

    monkeypatch.setattr(wf, "cross_validate", no_fit)
    t0 = time.perf_counter()
    assert _fit(store, tmp_path / "run") == 2
    assert "'bad,name.png' of split 'test' contains a comma" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "run").exists()


def test_an_error_after_the_model_is_saved_leaves_the_previous_run_whole(store, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _fit(store, run) == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    import regressors.workflow as wf

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(wf, "write_json", boom)  # after the bundle and the submission were written
    with pytest.raises(OSError, match="disk full"):
        wf.fit_command("image", str(store), ["generator", "prompt_minilm"], "mos", str(run),
                       wf.StackConfig(heads=("svr",), n_trials=0, n_jobs=1, outer_folds=3, tune_folds=2, pca=None,
                                      nested="split"), n_boot=0)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # the old model, metrics and submission, untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no temporary folder left


def test_kill_9_after_the_model_is_saved_leaves_the_previous_run_whole(store, tmp_path):
    run = tmp_path / "run"
    assert _fit(store, run) == 0
    before = (run / "model" / "bundle.json").read_bytes(), (run / "metrics.json").read_bytes()
    script = (
        "import os, sys\n"
        "import regressors.workflow as wf\n"
        "from regressors.cli import main\n"
        "wf.write_json = lambda *a, **k: os.kill(os.getpid(), 9)\n"  # killed once the new model is on disk
        f"sys.exit(main(['fit', '--track', 'image', '--store', {str(store)!r}, '--extractors', "
        f"'generator,prompt_minilm', '--out', {str(run)!r}, '--trials', '0', '--folds', '3', '--tune-folds', '2', "
        "'--pca', '0', '--bootstrap', '0', '--nested', 'split', '--heads', 'svr', '--jobs', '1']))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert ((run / "model" / "bundle.json").read_bytes(), (run / "metrics.json").read_bytes()) == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".run.tmp-")]
    assert leftovers and (leftovers[0] / "model" / "bundle.json").is_file()  # the new model never reached run/
    assert _fit(store, run) == 0  # the next run clears the dead run's temporary folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]


def test_predict_refuses_the_training_split(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(store, run) == 0
    assert main(["predict", "--model", str(run), "--store", str(store), "--split", "train",
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "the split this model was trained on" in err and "in-sample" in err
    assert not (tmp_path / "p").exists()
    assert main(["predict", "--model", str(run), "--store", str(store), "--split", "train", "--out",
                 str(tmp_path / "p"), "--allow-in-sample", "--bootstrap", "0"]) == 0
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["in_sample"] is True and m["submission"].startswith("not written")
    assert not (tmp_path / "p" / "submission").exists()
    # the same split name of another dataset is not in-sample
    other = _make_store(tmp_path / "other" / "toy.h5", seed=1)
    assert main(["predict", "--model", str(run), "--store", str(other), "--split", "train", "--out",
                 str(tmp_path / "q"), "--bootstrap", "0"]) == 0


def test_a_run_never_replaces_a_folder_that_is_not_a_run(store, tmp_path, capsys):
    keep = tmp_path / "data"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    assert _fit(store, keep) == 2
    assert "was not made by aigcq" in capsys.readouterr().err and (keep / "precious.txt").is_file()
