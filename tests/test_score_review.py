"""A hostile review of `aigcq score` after issue 21: each test reproduces a wrong answer, a hang, a lost copy of
the cache or a traceback found by attacking the finished work, and checks the fix."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aigcq import Predictor
from aigcq.inputs import attach_prompts, collect, read_prompt_table
from aigcq.score import main as score_main

REPO = Path(__file__).resolve().parents[1]


def _score(capsys, *args):
    capsys.readouterr()
    rc = score_main([*map(str, args), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _pngs(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(names):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / n, format="PNG")
        out.append(folder / n)
    return out


# ------------------------------------------------------------------ lists
def test_a_plain_text_list_of_a_few_dozen_lines_is_a_list_not_a_tty_video(tmp_path):
    """FFmpeg's 'tty' demuxer renders any .txt (.nfo, .asc, ...) of a few hundred bytes as ANSI-art video: a list of
    25 paths was "a video" (refused by an image model, scored as one video by a video model)."""
    from extractors.base import ItemError
    from extractors.media import media_kind

    names = [f"generated/sample_{i:04d}.png" for i in range(25)]
    _pngs(tmp_path / "generated", [Path(n).name for n in names])
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    with pytest.raises(ItemError, match="not an image or video"):
        media_kind(str(listing))
    items, _ = collect([str(listing)])
    assert [it.path for it in items] == names and all(Path(it.abspath).is_file() for it in items)
    notes = tmp_path / "notes"  # a text file an image folder may hold, with a name FFmpeg takes for ANSI art
    _pngs(notes, ["a.png"])
    (notes / "README.nfo").write_text("release notes\n" * 40)
    assert [Path(it.path).name for it in collect([str(notes)])[0]] == ["a.png"]


@pytest.mark.parametrize("case", ["bom_txt", "bom_csv_any_name", "crlf_no_final_newline", "bom_stdin"])
def test_a_list_saved_by_a_windows_editor_reads_every_entry(tmp_path, monkeypatch, case):
    """A UTF-8 BOM is the encoding's mark, not part of the first name (its entry failed as "file not found" for a
    file that is there; a CSV list not named .csv was not seen as a table); a CRLF file without a line break after
    its last line kept the CR on every other line (all but the last entry failed)."""
    names = ["a.png", "b.png", "c.png"]
    _pngs(tmp_path, names)
    raw = {"bom_txt": b"\xef\xbb\xbf" + "\n".join(names).encode() + b"\n",
           "bom_csv_any_name": b"\xef\xbb\xbfpath,prompt\n" + b"".join(f"{n},a cat\n".encode() for n in names),
           "crlf_no_final_newline": "\r\n".join(names).encode(),
           "bom_stdin": b"\xef\xbb\xbf" + "\n".join(names).encode() + b"\n"}[case]
    if case == "bom_stdin":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
        arg = "-"
    else:
        arg = tmp_path / "list.lst"
        arg.write_bytes(raw)
    items, _ = collect([str(arg)])
    assert [it.path for it in items] == names
    assert all(Path(it.abspath).is_file() for it in items)
    if case == "bom_csv_any_name":
        assert [it.prompt for it in items] == ["a cat"] * 3


def test_a_prompt_table_saved_with_a_bom_is_read(tmp_path):
    (tmp_path / "p.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"a.png": "a cat"}).encode())
    t = read_prompt_table(str(tmp_path / "p.json"))
    assert t.by_path == {str(tmp_path / "a.png"): "a cat"}


def test_a_stdin_list_naming_a_non_utf8_file_is_read_in_a_utf8_locale(tmp_path, monkeypatch):
    """In a UTF-8 locale other than C, Python's stdin is strict: one non-UTF-8 name in `find ... | aigcq score M -`
    refused the whole list (the same list as a file was read)."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    try:
        Image.new("RGB", (8, 8)).save(open(raw, "wb"), format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    _pngs(tmp_path, ["plain.png"])
    text = b"plain.png\ncaf\xe9.png\n"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", errors="strict"))
    items, _ = collect(["-"])
    assert [os.fsencode(it.abspath) for it in items] == [os.fsencode(tmp_path / "plain.png"), raw]


# ------------------------------------------------------------------ folders
def test_a_link_to_a_folder_above_is_a_loop_not_more_input(tmp_path):
    """A symlink to an ancestor (``up -> ../..``, or to ``/``) is a loop: it was followed and every media file above
    the folder was scored as part of it (from a link to ``/``: the whole file system, for hours)."""
    outside = _pngs(tmp_path, ["outside.png"])[0]
    top = tmp_path / "in"
    _pngs(top / "sub", ["a.png"])
    (top / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    items, notes = collect([str(top)])
    assert [Path(it.path).name for it in items] == ["a.png"], [it.path for it in items]
    assert str(outside) not in [it.abspath for it in items]
    assert any("sub/up" in n and "loop" in n for n in notes), notes


# ------------------------------------------------------------------ prompts
def test_a_bare_prompt_key_gives_its_prompt_to_that_file_only(tmp_path):
    """Key ``a.png`` gave its prompt to ``a.jpg`` (matched by the stem ``a``), status ok; keys that are ids with a
    dot (``img.001``) matched nothing."""
    folder = tmp_path / "img"
    _pngs(folder, ["a.png", "a.jpg", "img.001.png", "img.002.png"])
    table = tmp_path / "img" / "prompts.csv"
    table.write_text("path,prompt\na.png,a cat\nimg.001,a red fox\nimg.002,a blue whale\n")
    items, _ = collect([str(folder / n) for n in ("a.png", "a.jpg", "img.001.png", "img.002.png")])
    attach_prompts(items, read_prompt_table(str(table)))
    assert [it.prompt for it in items] == ["a cat", None, "a red fox", "a blue whale"]


# ------------------------------------------------------------------ --level
def test_level_one_is_refused_as_ambiguous_and_the_python_api_reads_levels_like_the_cli(score_model, tmp_path):
    """``--level 1`` gave a 1% interval (width 0.01: read as near certainty); the Python API took level=90 as
    "90 > 1: the whole range" and level=0 as an IndexError."""
    from regressors.conformal import parse_level

    with pytest.raises(ValueError, match="--level"):
        parse_level("1")
    assert parse_level("1%") == pytest.approx(0.01)
    bundle, heldout = score_model
    img = str(sorted((heldout / "images").glob("*.png"))[0])
    p = Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False)
    ref = p.score([img], prompts="a photo", level=0.9)
    for level in (90, "90%"):
        got = p.score([img], prompts="a photo", level=level)
        np.testing.assert_allclose(got[["score_lo", "score_hi"]].to_numpy(float), ref[["score_lo", "score_hi"]])
    for bad in (0, -1, 1, 150):
        with pytest.raises(ValueError, match="level"):
            p.score([img], prompts="a photo", level=bad)
    with pytest.raises(ValueError, match="level"):
        Predictor.load(bundle, cache=tmp_path / "c.h5", progress=False, level=0)


# ------------------------------------------------------------------ extractor set-up
def test_an_extractor_that_cannot_be_set_up_is_one_line_and_exit_2(score_model, tmp_path, capsys, monkeypatch):
    """A missing optional package (or a damaged weights file in the user's cache) raised in the extractor's set-up:
    a traceback and exit 1 (the code for "items failed")."""
    from extractors.nss import NSS

    def no_package(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'scipy_shadowed'")

    monkeypatch.setattr(NSS, "setup", no_package)
    bundle, heldout = score_model
    img = sorted((heldout / "images").glob("*.png"))[0]
    rc, out, err = _score(capsys, bundle, img, "--cache", tmp_path / "c.h5", "--generator", "x")
    assert rc == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nss" in lines[0] and "scipy_shadowed" in lines[0]


# ------------------------------------------------------------------ the cache
_DIE_IN_EVICTION = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *a, **k):  # killed just before the cache's rewrite (its most recent rows) replaces it
    if ".evict-" in os.fspath(src) and ".evict-" not in os.fspath(dst):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from aigcq.score import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_an_eviction_leaves_no_copy_of_the_cache_behind(score_model, tmp_path):
    """A run killed while it rewrote the cache within --cache-max left the new copy (up to the bound: gigabytes)
    beside the cache for good; no later run removed it."""
    bundle, heldout = score_model
    imgs = sorted((heldout / "images").glob("*.png"))
    cache = tmp_path / "cache" / "c.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = ["--cache", str(cache), "--no-progress", "--generator", "x", "--workers", "0"]
    first = subprocess.run([sys.executable, "-m", "aigcq", "score", str(bundle), *map(str, imgs[:4]), *base], env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    bound = str(int(cache.stat().st_size * 0.9))  # the next run writes and finds the cache over its bound
    killed = subprocess.run([sys.executable, "-c", _DIE_IN_EVICTION, str(bundle), *map(str, imgs[4:8]), *base,
                             "--cache-max", bound], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    leftovers = lambda: sorted(p.name for p in cache.parent.iterdir() if ".evict-" in p.name)  # noqa: E731
    assert leftovers(), "the run was not killed during an eviction"
    again = subprocess.run([sys.executable, "-m", "aigcq", "score", str(bundle), *map(str, imgs[8:10]), *base], env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert leftovers() == []
    df = pd.read_csv(io.StringIO(again.stdout))
    assert np.isfinite(df["score"]).all()
