"""`aigcq score` and the Predictor: new media scored with a model bundle, cached by content, failures by name."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aigcq import Predictor
from aigcq.score import main as score_main

REPO = Path(__file__).resolve().parents[1]
# --no-select-blocks: these models are trained on 10 and 174 items, where nested block selection may keep only the
# prompt or generator block; new media scored without either would then all get one score, and these tests are
# about scoring content (selection has its own tests in test_block_selection.py, scoring with it in
# test_score_kept_blocks.py)
FAST_FIT = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "svr,enet",
            "--jobs", "1", "--no-select-blocks"]


@pytest.fixture(scope="module")
def model(score_model):
    """A bundle trained on the tiny demo dataset (nss, prompt_minilm, generator), and the held-out images."""
    return score_model


def _score(capsys, *args):
    capsys.readouterr()  # drop what came before
    rc = score_main([*map(str, args), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_a_folder_is_scored_then_cached_and_an_edited_file_recomputed(model, tmp_path, capsys):
    bundle, heldout = model
    folder = tmp_path / "new images"
    shutil.copytree(heldout / "images", folder)
    (folder / "notes.md").write_text("not an image")
    cache = tmp_path / "cache.h5"
    rc, out, err = _score(capsys, bundle, folder, "--cache", cache)
    assert rc == 0, err
    df = pd.read_csv(io.StringIO(out))
    names = sorted(p.name for p in folder.glob("*.png"))
    assert [Path(p).name for p in df["path"]] == names  # one row per image, in (sorted) input order
    # the model reads the prompt and none was given: scored with an empty one, and every row says so
    assert (df["status"] == "no_prompt").all() and np.isfinite(df["score"]).all() and df["score"].nunique() > 1
    assert "skipped 1 file(s) that are not media: notes.md" in err
    assert "scored without a prompt (status no_prompt)" in err and "generator_unknown" in err
    assert f"features computed for {len(names) + 1} item-block(s)" in err  # nss per image + one (empty) prompt

    rc, out2, err = _score(capsys, bundle, folder, "--cache", cache)
    assert rc == 0 and "features computed for 0 item-block(s)" in err  # a second run computes nothing
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out2)), df)

    edited = folder / names[0]
    px = np.asarray(Image.open(edited)).copy()
    px[:8, :8] = 255 - px[:8, :8]
    Image.fromarray(px).save(edited)
    rc, out3, err = _score(capsys, bundle, folder, "--cache", cache)
    assert rc == 0 and "features computed for 1 item-block(s)" in err  # only the edited file
    df3 = pd.read_csv(io.StringIO(out3))
    assert df3["score"].iloc[0] != df["score"].iloc[0]
    np.testing.assert_array_equal(df3["score"].iloc[1:], df["score"].iloc[1:])


def test_a_broken_file_is_named_and_the_rest_is_scored(model, tmp_path, capsys):
    bundle, heldout = model
    folder = tmp_path / "imgs"
    shutil.copytree(heldout / "images", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = sorted(folder.glob("*_c0_*.png"))[0]
    (folder / "truncated.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out_csv = tmp_path / "scores.csv"
    rc, _, err = _score(capsys, bundle, folder, "--cache", tmp_path / "c.h5", "-o", out_csv)
    assert rc == 1
    df = pd.read_csv(out_csv)
    bad = df[df["status"] == "failed"]
    assert sorted(Path(p).name for p in bad["path"]) == ["broken.png", "truncated.png"]
    assert all(Path(p).name in e for p, e in zip(bad["path"], bad["error"]))  # each error names its file
    assert "truncated" in bad.set_index(bad["path"].map(lambda p: Path(p).name)).loc["truncated.png", "error"]
    assert (df[df["status"] == "ok"]["score"].notna()).all() and len(df) == len(list(folder.glob("*.png")))
    assert "failed: " in err and "broken.png" in err and "2 of" in err
    rc, _, _ = _score(capsys, bundle, folder, "--cache", tmp_path / "c.h5", "-o", out_csv, "--allow-failures")
    assert rc == 0


def test_lists_stdin_prompt_tables_and_json_output(model, tmp_path, capsys, monkeypatch):
    bundle, heldout = model
    listing = pd.read_csv(heldout / "list.csv")
    cache = tmp_path / "c.h5"
    # the demo's own list (path relative to it, prompt, generator)
    rc, out, err = _score(capsys, bundle, heldout / "list.csv", "--cache", cache, "--format", "json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["path"] for r in rows] == listing["path"].tolist() and all(r["status"] == "ok" for r in rows)
    assert "without a prompt" not in err and "generator_unknown" not in err  # every prompt and generator given
    # the same files on stdin as JSONL with prompts from a side table (matched by file name) -> same scores
    lines = "".join(json.dumps({"path": str(heldout / p), "generator": g}) + "\n"
                    for p, g in zip(listing["path"], listing["generator"]))
    table = tmp_path / "prompts.csv"
    pd.DataFrame({"name": [Path(p).name for p in listing["path"]], "prompt": listing["prompt"]}).to_csv(table)
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    rc, out, err = _score(capsys, bundle, "-", "--prompts", table, "--cache", cache, "-o", tmp_path / "s.jsonl")
    assert rc == 0, err
    rows2 = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows2] == [r["score"] for r in rows]
    assert "features computed for 0 item-block(s)" in err


def test_wrong_media_kind_and_unknown_generator(model, tmp_path, capsys):
    bundle, heldout = model
    imgs = sorted((heldout / "images").glob("*.png"))[:3]
    frames = [Image.open(p).convert("RGB") for p in imgs]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    rc, out, err = _score(capsys, bundle, imgs[0], gif, tmp_path / "missing.png", "--generator", "some-new-model",
                          "--cache", tmp_path / "c.h5")
    assert rc == 1
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert df["status"].tolist() == ["no_prompt", "failed", "failed"]  # scored (with an empty prompt), two failed
    assert "a video, but this model scores images" in df["error"][1] and "clip.gif" in df["error"][1]
    assert "file not found" in df["error"][2]
    assert "generator_unknown flag" in err


def test_predictor_api(model, tmp_path):
    bundle, heldout = model
    listing = pd.read_csv(heldout / "list.csv")
    p = Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False)
    assert p.card.startswith("# image quality model") and "aigcq score" in p.card
    assert p.track == "image" and p.target == "mos" and "fakegen-blur" in p.vocabulary
    paths = [str(heldout / x) for x in listing["path"][:4]]
    df = p.score(paths, prompts=listing["prompt"][:4].tolist(), generators=listing["generator"][:4].tolist())
    assert list(df.columns) == ["path", "score", "score_lo", "score_hi", "in_domain", "domain_score", "status",
                                "error"] and (df["status"] == "ok").all()
    assert (df["score_lo"] <= df["score"]).all() and (df["score"] <= df["score_hi"]).all()
    assert df["in_domain"].map(type).eq(bool).all() and np.isfinite(df["domain_score"]).all()
    assert {"load_s", "extraction_s", "prediction_s"} <= set(p.timings)
    ims = [Image.open(x) for x in paths]
    df2 = p.score_images(ims, listing["prompt"][:4].tolist(), listing["generator"][:4].tolist())
    np.testing.assert_allclose(df2["score"], df["score"], rtol=0, atol=1e-9)  # same pixels, same scores
    assert df2["path"].tolist() == [f"<image {i}>" for i in range(4)]


def test_console_entry_lists_every_job_and_passes_module_flags_through():
    proc = subprocess.run([sys.executable, "-m", "aigcq", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    for job in ("describe", "validate", "features", "merge", "regress", "predict", "score", "ablate", "reproduce"):
        assert f"\n  {job} " in proc.stdout, job
    proc = subprocess.run([sys.executable, "-m", "aigcq", "regress", "--help"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--allow-incomplete" in proc.stdout and "--nested" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "aigcq", "features", "--help"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--on-invalid" in proc.stdout and "--threads" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "aigcq", "regres"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "Did you mean 'regress'" in proc.stderr


@pytest.mark.slow
@pytest.mark.shared
def test_a_model_trained_on_fetv_scores_a_folder_of_gifs(shared_data, tmp_path, capsys):
    """Real generated videos: FETV GIFs, video track, frames of nss + the prompt; then a folder of GIFs."""
    from extractors.registry import for_track
    from extractors.runner import run_extraction
    from features_store import FeatureStore, load_dataset
    from regressors.cli import main

    m = load_dataset(shared_data / "fetv")
    store = tmp_path / "fetv.h5"
    with FeatureStore(store, mode="a") as st:
        for spec in ("nss:max_side=128", "prompt_minilm"):
            ex = for_track(spec, "video")
            if ex.name == "frames":
                ex.options["n_frames"] = 2
            run_extraction(m, ex, st, workers=0, batch_size=16, progress=False)
    run = tmp_path / "run"
    assert main(["fit", "--track", "video", "--store", str(store), "--target", "static_quality", "--out", str(run),
                 *FAST_FIT]) == 0
    folder = tmp_path / "gifs"
    folder.mkdir()
    picks = m.df.groupby(m.df["path"].map(lambda p: p.split("/")[-2])).head(2)
    for rel in picks["path"]:
        shutil.copy(Path(m.root) / rel, folder / rel.replace("/", "_"))
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "still.png")
    rc, out, err = _score(capsys, run / "model", folder, "--cache", tmp_path / "c.h5")
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert rc == 1  # the still image is the wrong kind for a video model; every GIF is scored
    ok = df[df["path"].str.endswith(".gif")]
    # the model reads the prompt and the folder gives none: scored with an empty one, and the rows say so
    assert len(ok) == len(picks) and (ok["status"] == "no_prompt").all()
    assert df.loc[df["path"].str.endswith("still.png"), "error"].str.contains("an image, but this model scores videos").all()
    scores = pd.to_numeric(ok["score"])
    assert scores.between(1, 5.5).all() and scores.nunique() > 1
