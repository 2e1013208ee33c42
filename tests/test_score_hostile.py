"""`aigcq score` / `aigcq predict` on inputs strangers write: each test reproduces one row of issue 21's table
(a wrong answer with exit 0, a lost run, a refusal naming an option `score` does not have) and checks the fix."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aigcq import Predictor
from aigcq.inputs import InputError, attach_prompts, collect, read_prompt_table
from aigcq.score import main as score_main

REPO = Path(__file__).resolve().parents[1]


def _score(capsys, *args):
    capsys.readouterr()
    rc = score_main([*map(str, args), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _images(heldout: Path, n: int) -> list[Path]:
    return sorted((heldout / "images").glob("*.png"))[:n]


def _alone(bundle, path: Path, tmp_path: Path, prompt: str = "a photo") -> float:
    """The score of one file, in a fresh cache (the reference a wrong cache or a wrong path would miss)."""
    cache = tmp_path / f"alone-{path.name.strip() or 'x'}-{os.urandom(4).hex()}.h5"
    p = Predictor.load(bundle, cache=cache, progress=False)
    return float(p.score([str(path)], prompts=[prompt])["score"].iloc[0])


# ------------------------------------------------------------------ the score cache
def test_a_file_rewritten_during_scoring_is_never_cached_under_its_old_hash(score_model, tmp_path, monkeypatch):
    bundle, heldout = score_model
    a, b = _images(heldout, 2)
    work = tmp_path / "work.png"
    shutil.copy(a, work)
    import extractors.runner as runner

    real = runner.run_extraction

    def rewrite_then_extract(*args, **kwargs):  # another process rewrites the file after it was hashed
        shutil.copy(b, work)
        return real(*args, **kwargs)

    cache = tmp_path / "cache.h5"
    p = Predictor.load(bundle, cache=cache, progress=False)
    monkeypatch.setattr(runner, "run_extraction", rewrite_then_extract)
    df = p.score([str(work)], prompts=["a photo"])
    monkeypatch.setattr(runner, "run_extraction", real)
    assert df["status"].iloc[0] == "failed" and "changed while it was being scored" in df["error"].iloc[0]
    # a later file with a's bytes gets a's features, not b's cached under a's hash
    again = tmp_path / "again.png"
    shutil.copy(a, again)
    got = float(p.score([str(again)], prompts=["a photo"])["score"].iloc[0])
    assert got == pytest.approx(_alone(bundle, a, tmp_path), abs=1e-9)
    assert got != pytest.approx(_alone(bundle, b, tmp_path), abs=1e-6)


def _filled_cache(bundle, heldout, tmp_path, capsys) -> tuple[Path, pd.DataFrame, list[Path]]:
    imgs = _images(heldout, 3)
    cache = tmp_path / "cache" / "c.h5"
    rc, out, err = _score(capsys, bundle, *imgs, "--cache", cache, "--generator", "x")
    assert rc == 0, err
    return cache, pd.read_csv(io.StringIO(out)), imgs


def test_a_fully_cached_set_is_scored_while_another_process_writes_the_cache(score_model, tmp_path, capsys):
    from features_store import FeatureStore

    bundle, heldout = score_model
    cache, first, imgs = _filled_cache(bundle, heldout, tmp_path, capsys)
    with FeatureStore(cache, mode="a"):  # another `aigcq score` holds the writer lock
        rc, out, err = _score(capsys, bundle, *imgs, "--cache", cache, "--generator", "x")
    assert rc == 0, err
    assert "--shard" not in err and "features computed for 0 item-block(s)" in err
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out)), first)


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` read-only: a read-only bind mount as root (permissions do not stop root), chmod otherwise."""
    if os.geteuid() == 0:
        if shutil.which("mount") is None or subprocess.run(["mount", "--bind", folder, folder]).returncode:
            pytest.skip("running as root and cannot bind-mount read-only (permissions do not stop root)")
        try:
            if subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder]).returncode:
                pytest.skip("running as root and cannot remount read-only")
            yield
        finally:
            subprocess.run(["umount", folder])
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


def test_a_read_only_cache_scores_what_it_holds_and_scores_the_rest_without_keeping_it(score_model, tmp_path, capsys):
    bundle, heldout = score_model
    cache, first, imgs = _filled_cache(bundle, heldout, tmp_path, capsys)
    new = _images(heldout, 4)[3]
    with _read_only(cache.parent):
        rc, out, err = _score(capsys, bundle, *imgs, "--cache", cache, "--generator", "x")
        assert rc == 0, err
        assert "--store" not in err and "not writable" not in err
        pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out)), first)
        rc, out, err = _score(capsys, bundle, *imgs, new, "--cache", cache, "--generator", "x")
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert (df["status"] == "no_prompt").all() and np.isfinite(df["score"]).all()
    assert "cannot be written" in err and "--store" not in err


def test_an_uncreatable_cache_folder_is_one_line_and_exit_2(score_model, tmp_path, capsys):
    bundle, heldout = score_model
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, out, err = _score(capsys, bundle, *_images(heldout, 1), "--cache", blocker / "sub" / "c.h5")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --cache") and "cannot create the folder" in lines[0]
    assert "Traceback" not in err and "--store" not in err and "--shard" not in err


def test_the_cache_keeps_the_most_recently_used_rows_within_its_bound(score_model, tmp_path, capsys):
    bundle, heldout = score_model
    imgs = sorted((heldout / "images").glob("*.png"))
    first, second = imgs[:6], imgs[6:12]
    cache = tmp_path / "c.h5"
    rc, _, err = _score(capsys, bundle, *first, "--cache", cache, "--generator", "x", "--cache-max", "none")
    assert rc == 0, err
    bound = int(cache.stat().st_size * 1.02)  # room for one set of images (and the prompt), not two
    rc, _, err = _score(capsys, bundle, *second, "--cache", cache, "--generator", "x", "--cache-max", str(bound))
    assert rc == 0, err
    assert "most recently used" in err and cache.stat().st_size <= bound
    rc, _, err = _score(capsys, bundle, *second, "--cache", cache, "--generator", "x", "--cache-max", str(bound))
    assert "features computed for 0 item-block(s)" in err  # the recent set stayed
    rc, _, err = _score(capsys, bundle, *first, "--cache", cache, "--generator", "x", "--cache-max", str(bound))
    assert rc == 0 and "features computed for 0 item-block(s)" not in err  # the older one was dropped


def test_kill_9_leaves_nothing_in_tmpdir_and_the_next_run_clears_its_scratch(score_model, tmp_path):
    bundle, heldout = score_model
    folder = tmp_path / "many"
    folder.mkdir()
    src = np.asarray(Image.open(_images(heldout, 1)[0]).convert("RGB").resize((256, 256)))
    rng = np.random.default_rng(0)
    for i in range(60):  # distinct content: each is extracted
        Image.fromarray(np.clip(src.astype(int) + rng.integers(-20, 20, src.shape), 0, 255).astype(np.uint8)).save(
            folder / f"{i:03d}.png")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    cache = tmp_path / "cache" / "c.h5"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "aigcq", "score", str(bundle), str(folder), "--cache", str(cache), "--no-progress",
           "--workers", "0", "--generator", "x"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scratch = cache.parent / ".aigcq-scratch"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(scratch.glob("*/scratch.h5*")) or any(tmpdir.glob("aigcq-*")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed during extraction"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert any(scratch.iterdir())  # the killed run's scratch, beside the cache ...
    done = subprocess.run(cmd[:5] + [str(_images(heldout, 1)[0])] + cmd[6:], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not scratch.exists() or list(scratch.iterdir()) == []  # ... removed by the next run
    assert sorted(p.name for p in tmpdir.iterdir()) == []


# ------------------------------------------------------------------ lists
def _lead_pair(score_model, tmp_path) -> tuple[Path, float, float]:
    bundle, heldout = score_model
    a, b = _images(heldout, 2)
    folder = tmp_path / "lists"
    folder.mkdir()
    shutil.copy(a, folder / " lead.png")
    shutil.copy(b, folder / "lead.png")
    return folder, _alone(bundle, a, tmp_path, ""), _alone(bundle, b, tmp_path, "")


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "txt", "stdin"])
def test_a_list_naming_a_leading_space_file_beside_another_scores_each_as_named(score_model, tmp_path, capsys,
                                                                               monkeypatch, fmt):
    bundle, _ = score_model
    folder, sa, sb = _lead_pair(score_model, tmp_path)
    names = [" lead.png", "lead.png"]
    text = {"json": json.dumps(names), "jsonl": "".join(json.dumps({"path": n}) + "\n" for n in names),
            "csv": "path\n" + "".join(f"{n}\n" for n in names), "txt": "".join(f"{n}\n" for n in names),
            "stdin": "".join(f"{n}\n" for n in names)}[fmt]
    if fmt == "stdin":
        monkeypatch.chdir(folder)
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        arg = "-"
    else:
        arg = folder / f"list.{fmt}"
        arg.write_text(text)
    rc, out, err = _score(capsys, bundle, arg, "--cache", tmp_path / "c.h5", "--allow-failures")
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert df["path"].tolist() == names, err
    assert df["status"].tolist() == ["no_prompt", "no_prompt"]
    np.testing.assert_allclose(df["score"].astype(float), [sa, sb], rtol=0, atol=1e-9)


def test_stdin_names_starting_with_hash_or_brackets_are_paths(score_model, tmp_path, capsys, monkeypatch):
    bundle, heldout = score_model
    names = ["#hash.png", "[br].png", "{x}.png"]
    for n, src in zip(names, _images(heldout, 3)):
        shutil.copy(src, tmp_path / n)
    monkeypatch.chdir(tmp_path)
    for first in (names, names[1:], names[2:]):  # a list starting with each of them
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{n}\n" for n in first)))
        rc, out, err = _score(capsys, bundle, "-", "--cache", tmp_path / "c.h5")
        df = pd.read_csv(io.StringIO(out), keep_default_na=False)
        assert rc == 0, err
        assert df["path"].tolist() == first and (df["status"] == "no_prompt").all()


def test_a_text_file_given_as_input_is_not_read_as_paths_unless_it_lists_files(score_model, tmp_path, capsys):
    bundle, heldout = score_model
    caption = tmp_path / "caption.txt"
    caption.write_text("a cat sitting on a mat\nin the evening sun\n")
    listing = tmp_path / "files.txt"
    img = _images(heldout, 1)[0]
    listing.write_text(f"{img}\n")
    disguised = tmp_path / "photo.txt"  # an image with a .txt name: its content decides
    shutil.copy(img, disguised)
    rc, out, err = _score(capsys, bundle, caption, listing, disguised, "--cache", tmp_path / "c.h5")
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert df["path"].tolist() == [str(caption), str(img), str(disguised)]
    assert df["status"].tolist() == ["failed", "no_prompt", "no_prompt"] and rc == 1
    assert "nor a list of paths" in df["error"][0] and str(caption) in df["error"][0]
    assert df["score"][1] == df["score"][2]


# ------------------------------------------------------------------ prompts
def test_prompt_keys_are_paths_relative_to_the_table(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for d in ("A", "B"):
        (root / d).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / d / "x.png")
    (root / "prompts.csv").write_text("path,prompt\nA/x.png,a red fox\nB/x.png,a blue whale\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    items, _ = collect([str(root / "A"), str(root / "B")])
    attach_prompts(items, read_prompt_table(str(root / "prompts.csv")))
    assert [it.prompt for it in items] == ["a red fox", "a blue whale"]


def test_a_prompt_key_twice_with_different_prompts_or_an_ambiguous_name_is_refused(score_model, tmp_path, capsys):
    table = tmp_path / "prompts.csv"
    table.write_text("path,prompt\nx.png,a red fox\nother.png,a dog\nx.png,a blue whale\n")
    with pytest.raises(InputError, match="'x.png' is given twice with different prompts"):
        read_prompt_table(str(table))
    bundle, heldout = score_model
    rc, _, err = _score(capsys, bundle, *_images(heldout, 1), "--prompts", table, "--cache", tmp_path / "c.h5")
    assert rc == 2 and "given twice" in err
    # the same prompt twice is harmless; a bare file name keys that file only (not x.webp by its stem: see
    # test_score_review.test_a_bare_prompt_key_gives_its_prompt_to_that_file_only)
    table.write_text("path,prompt\nx.png,a red fox\nx.png,a red fox\nx.jpg,a blue whale\n")
    t = read_prompt_table(str(table))
    (tmp_path / "img").mkdir()
    for name in ("x.webp", "x.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    items, _ = collect([str(tmp_path / "img" / n) for n in ("x.webp", "x.png")])
    attach_prompts(items, t)
    assert [it.prompt for it in items] == [None, "a red fox"]


def test_a_missing_prompt_is_a_status_and_a_python_warning(score_model, tmp_path):
    bundle, heldout = score_model
    imgs = [str(p) for p in _images(heldout, 3)]
    p = Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False)
    with pytest.warns(UserWarning, match="2 item\\(s\\) scored without a prompt"):
        df = p.score(imgs, prompts=["a photo", "", None])
    assert df["status"].tolist() == ["ok", "no_prompt", "no_prompt"] and np.isfinite(df["score"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (p.score(imgs, prompts="a photo")["status"] == "ok").all()  # every prompt given: no warning


# ------------------------------------------------------------------ folders and file names
def test_symlinked_folders_are_followed_and_loops_named(tmp_path):
    top = tmp_path / "in"
    (top / "real").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 8)).save(top / "real" / "a.png")
    Image.new("RGB", (8, 8)).save(other / "b.png")
    (top / "linked").symlink_to(other, target_is_directory=True)
    (top / "real" / "loop").symlink_to(top, target_is_directory=True)
    items, notes = collect([str(top)])
    assert sorted(Path(it.path).relative_to(top).as_posix() for it in items) == ["linked/b.png", "real/a.png"]
    assert any("real/loop" in n and "already scanned" in n for n in notes)


def test_a_non_utf8_file_name_is_written_to_csv_and_json_without_losing_the_run(score_model, tmp_path, capsys):
    bundle, heldout = score_model
    folder = tmp_path / "names"
    folder.mkdir()
    img = _images(heldout, 1)[0]
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.png"
    try:
        shutil.copy(img, raw)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    shutil.copy(img, folder / "plain.png")
    out = tmp_path / "out.csv"
    rc, _, err = _score(capsys, bundle, folder, "--cache", tmp_path / "c.h5", "-o", out)
    assert rc == 0, err
    assert not Path(f"{out}.tmp").exists()
    df = pd.read_csv(out, encoding_errors="surrogateescape")  # the name's own bytes, back as surrogate escapes
    assert len(df) == 2 and (df["status"] == "no_prompt").all()
    assert os.fsencode(df["path"][0]) == raw and Path(df["path"][0]).is_file()
    rc, _, err = _score(capsys, bundle, folder, "--cache", tmp_path / "c.h5", "-o", tmp_path / "out.json")
    assert rc == 0, err
    rows = json.loads((tmp_path / "out.json").read_text())
    assert os.fsencode(rows[0]["path"]) == raw


# ------------------------------------------------------------------ predict's in-sample check
def test_predict_refuses_a_copy_of_the_training_data_in_another_folder(tmp_path, capsys):
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main

    cfg = DemoConfig(n_sources=4, crops_per_source=1, size=32)
    store = build_demo_store(tmp_path / "orig", cfg, extractors=("nss", "generator"))
    run = tmp_path / "run"
    assert main(["fit", "--track", "image", "--store", str(store), "--out", str(run), "--trials", "0", "--folds", "2",
                 "--tune-folds", "2", "--bootstrap", "0", "--heads", "enet", "--jobs", "1"]) == 0
    copy = tmp_path / "copy" / "data"
    shutil.copytree(tmp_path / "orig" / "data", copy)
    yaml = copy / "demo.yaml"
    yaml.write_text(yaml.read_text().replace("name: demo_synthetic", "name: someone_elses_copy"))
    from features_store import FeatureStore, load_dataset
    from extractors.registry import for_track
    from extractors.runner import run_extraction

    copy_store = tmp_path / "copy.h5"
    with FeatureStore(copy_store, mode="a") as st:
        for spec in ("nss", "generator"):
            run_extraction(load_dataset(str(yaml)), for_track(spec, "image"), st, workers=0, progress=False)
    capsys.readouterr()
    rc = main(["predict", "--model", str(run / "model"), "--store", str(copy_store), "--split", "train",
               "--out", str(tmp_path / "pred"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "the split this model was trained on (all 24 items" in err and not (tmp_path / "pred").exists()
