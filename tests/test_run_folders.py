"""Issue 22 part 3: the toolkit only replaces what it made.

Before: any folder holding one of metrics.json, model/, predictions.csv, submission/ counted as a run folder and was
replaced whole (`--out .` in a project lost .git and src; a stray predictions.csv cost thesis.tex), a symlink as
--out was replaced by a real folder, and `--cache <a user's file>` left a stray `<file>.journal/` folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regressors.cli import main
from test_regress_cli import _make_store

REPO = Path(__file__).resolve().parents[1]
FAST = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--pca", "0", "--bootstrap", "0", "--nested", "split",
        "--heads", "enet", "--jobs", "1", "--fixed-heads", "", "--block-head", "none"]


def _fit(store, out):
    return main(["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm",
                 "--out", str(out), *FAST])


def _tree(folder: Path) -> dict:
    """Every file below ``folder`` (links not followed) and its bytes."""
    out = {}
    for dirpath, dirnames, files in os.walk(folder):
        for f in files + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / f
            out[p.relative_to(folder).as_posix()] = os.readlink(p) if p.is_symlink() else p.read_bytes()
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    store = _make_store(root / "toy.h5")
    run = root / "run"
    assert _fit(store, run) == 0
    return store, run


def _one_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _project(folder: Path, *, stray: str | None = None) -> dict:
    """A user's project: .git/, src/, thesis.tex, model/weights.txt (+ one stray file an older version took as a run)."""
    (folder / ".git" / "objects").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "src").mkdir()
    (folder / "src" / "train.py").write_text("print('mine')\n")
    (folder / "model").mkdir()
    (folder / "model" / "weights.txt").write_text("0.1 0.2\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")
    (folder / "data").mkdir()
    (folder / "data" / "ratings.csv").write_text("a,1\n")
    if stray == "predictions.csv":
        (folder / "predictions.csv").write_text("item_id,prediction\n")
    elif stray == "submission":
        (folder / "submission").mkdir()
        (folder / "notes").mkdir()
        (folder / "notes" / "paper.md").write_text("# my paper\n")
    return _tree(folder)


@pytest.mark.parametrize("stray", [None, "predictions.csv"])
def test_regress_never_replaces_a_project_folder(toy, tmp_path, capsys, stray):
    store, _ = toy
    project = tmp_path / "project"
    project.mkdir()
    before = _project(project, stray=stray)
    assert _fit(store, project) == 2
    line = _one_line(capsys)
    assert "was not made by aigcq" in line and "choose an empty or new folder" in line
    assert _tree(project) == before  # .git, src, thesis.tex, model/weights.txt, data/ all in place
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".project.")]


def test_regress_out_dot_in_a_project_is_refused(toy, tmp_path):
    store, _ = toy
    project = tmp_path / "project"
    project.mkdir()
    before = _project(project, stray="predictions.csv")
    proc = subprocess.run([sys.executable, "-m", "aigcq", "regress", "--track", "image", "--store", str(store),
                           "--extractors", "generator,prompt_minilm", "--out", ".", *FAST],
                          cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "choose an empty or new folder" in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(project) == before


def test_predict_never_replaces_a_folder_holding_a_submission_folder(toy, tmp_path, capsys):
    store, run = toy
    folder = tmp_path / "paper"
    folder.mkdir()
    before = _project(folder, stray="submission")
    assert main(["predict", "--model", str(run / "model"), "--store", str(store), "--split", "val",
                 "--out", str(folder), "--bootstrap", "0"]) == 2
    assert "choose an empty or new folder" in _one_line(capsys)
    assert _tree(folder) == before and (folder / "notes" / "paper.md").is_file()


def test_a_symlink_as_out_is_refused_and_stays_a_link(toy, tmp_path, capsys):
    store, run = toy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    link = tmp_path / "out"
    link.symlink_to(elsewhere, target_is_directory=True)
    assert _fit(store, link) == 2
    assert "symbolic link" in _one_line(capsys)
    assert link.is_symlink() and _tree(elsewhere) == {"keep.txt": b"x"}
    # a link to a marked run folder is refused the same way: a run never writes through a link
    link.unlink()
    link.symlink_to(run, target_is_directory=True)
    before = _tree(run)
    assert main(["predict", "--model", str(run / "model"), "--store", str(store), "--split", "val",
                 "--out", str(link), "--bootstrap", "0"]) == 2
    assert "symbolic link" in _one_line(capsys) and link.is_symlink() and _tree(run) == before


def test_a_marked_run_is_replaced_and_one_with_a_user_file_is_refused(toy, tmp_path, capsys):
    store, _ = toy
    run = tmp_path / "run"
    assert _fit(store, run) == 0
    marker = json.loads((run / ".aigcq-run.json").read_text())
    assert marker["job"] == "regress" and marker["run_id"]
    assert "model/bundle.json" in marker["files"] and "metrics.json" in marker["files"]
    # a predict run inside the run folder has its own marker: replacing the run takes it along
    assert main(["predict", "--model", str(run), "--store", str(store), "--split", "val", "--out",
                 str(run / "predict"), "--bootstrap", "0"]) == 0
    assert _fit(store, run) == 0
    second = json.loads((run / ".aigcq-run.json").read_text())
    assert second["run_id"] != marker["run_id"] and not (run / "predict").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # nothing left aside
    # a file the toolkit did not write, added to the run folder: the run is not replaced
    (run / "notes.md").write_text("my notes on this run\n")
    before = _tree(run)
    capsys.readouterr()
    assert _fit(store, run) == 2
    line = _one_line(capsys)
    assert "holds files aigcq did not write (notes.md)" in line and "choose an empty or new folder" in line
    assert _tree(run) == before
    # a symlink placed inside a run folder is not the toolkit's either (never followed, never deleted through)
    (run / "notes.md").unlink()
    target = tmp_path / "precious"
    target.mkdir()
    (target / "a.txt").write_text("a")
    (run / "model" / "link").symlink_to(target, target_is_directory=True)
    assert _fit(store, run) == 2
    assert "model/link" in _one_line(capsys) and (target / "a.txt").is_file()


def test_a_run_folder_of_an_older_version_is_refused_saying_how_to_remove_it(toy, tmp_path, capsys):
    store, run = toy
    old = tmp_path / "old-run"
    old.mkdir()
    for f in ("metrics.json", "predictions.csv", "report.md"):
        (old / f).write_text("{}")
    (old / "model").mkdir()
    (old / "model" / "bundle.json").write_text("{}")
    assert _fit(store, old) == 2
    line = _one_line(capsys)
    assert "choose an empty or new folder" in line and "looks like the run folder of an older aigcq" in line
    assert "remove it yourself" in line
    assert sorted(_tree(old)) == ["metrics.json", "model/bundle.json", "predictions.csv", "report.md"]
    # a project with a stray predictions.csv is not called an old run (nobody is told to remove their project)
    project = tmp_path / "project"
    project.mkdir()
    _project(project, stray="predictions.csv")
    (project / "metrics.json").write_text("{}")
    assert _fit(store, project) == 2
    assert "older aigcq" not in _one_line(capsys)


def test_ablate_and_demo_refuse_a_folder_they_did_not_make(tmp_path, capsys):
    from experiments.ablate import main as ablate_main
    from experiments.demo import main as demo_main

    folder = tmp_path / "mine"
    folder.mkdir()
    before = _project(folder, stray="predictions.csv")
    store = _make_store(tmp_path / "toy.h5")
    assert ablate_main(["--store", str(store), "--extractors", "generator,prompt_minilm", "--out", str(folder),
                        "--trials", "0", "--n-boot", "0", "--jobs", "1"]) == 2
    assert "was not made by `aigcq ablate`" in _one_line(capsys)
    assert demo_main(["--out", str(folder)]) == 2
    assert "was not made by `aigcq demo`" in _one_line(capsys)
    assert _tree(folder) == before


def test_ablate_reuses_its_own_folder_and_lists_what_it_wrote(tmp_path, capsys):
    from experiments.ablate import run_ablation

    store = _make_store(tmp_path / "toy.h5", n_train=60, n_val=0, n_test=0)
    out = tmp_path / "abl"
    for _ in range(2):  # the second run reuses the folder (its tuned-parameter cache lives there)
        run_ablation(store, ["generator", "prompt_minilm"], target="mos", trials=0, n_boot=0, out=out,
                     progress=False, n_jobs=1)
    marker = json.loads((out / ".aigcq-run.json").read_text())
    assert marker["job"] == "ablate" and {"ablation.csv", "ablation.md", "predictions.csv"} <= set(marker["files"])
    from regressors.rundir import foreign_entries

    assert foreign_entries(out) == []


def test_reproduce_refuses_the_folder_before_computing_anything(tmp_path, capsys):
    from experiments.demo_data import DemoConfig, build_demo_dataset
    from experiments.reproduce import main as reproduce_main

    data = build_demo_dataset(tmp_path / "data", DemoConfig(n_sources=2, crops_per_source=1, size=32))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "predictions.csv").write_text("x\n")
    (folder / "thesis.tex").write_text("x\n")
    store = tmp_path / "s.h5"
    assert reproduce_main(["--track", "image", "--data", str(data), "--store", str(store), "--out", str(folder),
                           "--recipe", "offline"]) == 2
    assert "choose an empty or new folder" in capsys.readouterr().err
    assert not store.exists() and sorted(_tree(folder)) == ["predictions.csv", "thesis.tex"]


def test_a_users_file_as_score_cache_is_refused_and_nothing_is_left_beside_it(nss_bundle, tmp_path, capsys):
    from aigcq.score import main as score_main
    from PIL import Image

    bundle = nss_bundle[0]
    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(img)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    folder = tmp_path / "somefolder"
    folder.mkdir()
    for cache in (notes, folder):
        rc = score_main([str(bundle), str(img), "--cache", str(cache), "--no-progress", "--quiet"])
        assert rc == 2
        assert "not a feature store" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "notes.txt", "somefolder"]  # no *.journal/


def test_the_table_cache_never_evicts_a_file_it_did_not_write(tmp_path, monkeypatch):
    from features_store import table_cache

    import pandas as pd

    folder = tmp_path / "tables"
    folder.mkdir()
    mine = folder / "my-settings.json"
    mine.write_text("{}")
    monkeypatch.setattr(table_cache, "MAX_ENTRIES", 1)
    for i in range(3):
        src = tmp_path / f"t{i}.csv"
        src.write_text(f"a\n{i}\n")
        monkeypatch.setenv(table_cache.ENV, str(folder))
        table_cache.cached_table(src, lambda: pd.DataFrame({"a": [i]}))
    assert mine.is_file()
    assert len([p for p in folder.iterdir() if table_cache.ENTRY_NAME.fullmatch(p.name)]) == 1


# ------------------------------------------------------------------------- hostile review (r22): holes found after merge
def test_a_job_that_adds_to_its_folder_never_writes_through_a_link_in_it(tmp_path, capsys):
    """Before: an `ablate` folder (marked, e.g. unpacked from someone's archive) whose ablation.md was a link made
    `aigcq ablate` overwrite the link's target, a file anywhere."""
    from regressors.rundir import MARKER, RunFolderError, claim_folder

    victim = tmp_path / "thesis.tex"
    victim.write_text("my thesis\n")
    out = tmp_path / "abl"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"tool": "aigc-quality", "run_id": "x", "job": "ablate", "files": []}))
    (out / "ablation.md").symlink_to(victim)
    with pytest.raises(RunFolderError, match="symbolic link"):
        claim_folder(out, "ablate")
    assert victim.read_text() == "my thesis\n"


@pytest.mark.parametrize("name", ["*", "r?", "[ab]"])
def test_cleaning_up_after_killed_runs_touches_only_this_out(tmp_path, name):
    """Before: the leftovers of killed runs were found with a glob of the --out name, so an --out named with glob
    characters removed other folders' temporaries (`.a.tmp-<pid>` beside `--out '*'`), and a `tmp` folder was removed
    whole whatever it held."""
    from regressors.rundir import staged

    other = tmp_path / ".a.tmp-999999999"  # no such process: it looks like a killed run's temporary of --out a
    other.mkdir()
    (other / "keep.txt").write_text("not yours\n")
    with staged(tmp_path / name) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (other / "keep.txt").read_text() == "not yours\n"
    unmarked = tmp_path / f".{name}.tmp-999999999"  # named like ours, but holding no marker: not ours
    unmarked.mkdir()
    (unmarked / "keep.txt").write_text("not yours either\n")
    with staged(tmp_path / name) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (unmarked / "keep.txt").read_text() == "not yours either\n"


def test_an_hdf5_file_of_the_users_as_score_cache_is_refused_and_kept(nss_bundle, tmp_path, capsys):
    """Before: an HDF5 file that is not a feature store (the user's own data) was taken as the cache and rewritten:
    its datasets were gone, exit 0."""
    import h5py
    import numpy as np
    from PIL import Image

    from aigcq.score import main as score_main

    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(img)
    mine = tmp_path / "experiment.h5"
    with h5py.File(mine, "w") as f:
        f["measurements"] = np.arange(10)
    before = mine.read_bytes()
    assert score_main([str(nss_bundle[0]), str(img), "--cache", str(mine), "--no-progress", "--quiet"]) == 2
    assert "not a feature store" in capsys.readouterr().err
    assert mine.read_bytes() == before and not Path(f"{mine}.journal").exists()


def test_a_run_never_removes_the_temporary_folder_of_a_run_on_another_machine(tmp_path):
    """Before: temporaries were named by pid alone, so on a file system two machines share (a cluster's home) a run
    took another machine's live run for killed (its pid is unknown here) and removed its staging folder: that run
    failed at its end, its hours of fitting lost. Leftovers of this machine's killed runs still go."""
    import socket

    from regressors.rundir import write_marker, staged

    host = socket.gethostname()
    elsewhere = tmp_path / ".run.tmp-some-other-node.cluster+999999999"
    ours_killed = tmp_path / f".run.tmp-{host}+999999999"
    older_killed = tmp_path / ".run.tmp-999999999"  # named before the host was part of the name
    for p in (elsewhere, ours_killed, older_killed):
        p.mkdir()
        write_marker(p, "regress")
        (p / "model.skops").write_text("being written")
    with staged(tmp_path / "run") as tmp:
        assert tmp.name.startswith(f".run.tmp-{host}+")
        (tmp / "metrics.json").write_text("{}")
    assert (elsewhere / "model.skops").is_file()
    assert not ours_killed.exists() and not older_killed.exists()


def test_opening_a_store_named_with_glob_characters_leaves_other_stores_temporaries(tmp_path):
    """Before: a store opened for writing removed `.<its name>.tmp-*` found by an unescaped glob, so a store named
    `s*.h5` removed another store's temporary (`.sX.h5.tmp-<pid>`), which that store's writer was about to swap in."""
    from features_store import FeatureStore

    other = tmp_path / ".sX.h5.tmp-12345"
    other.write_bytes(b"another store being written")
    with FeatureStore(tmp_path / "s*.h5", mode="a"):
        pass
    assert other.read_bytes() == b"another store being written"
