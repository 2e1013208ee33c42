"""`aigcq regress` and `aigcq predict` refuse features computed from media that changed (or vanished) since.

Before: only `aigcq features` compared the media with the fingerprints the store records; regress and
predict read the store as it was, so a dataset whose images were replaced after extraction trained on and
predicted from the old images' features without a word. Each test first shows the command working, then
changes the media and checks the refusal (exit status 2, the items named, the command that refreshes them)."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from PIL import Image

from aigcq.cli import main as aigcq

FAST_FIT = ["--trials", "0", "--folds", "3", "--tune-folds", "2", "--bootstrap", "0", "--heads", "enet",
            "--block-head", "none", "--fixed-heads", "", "--jobs", "1", "--no-select-blocks", "--nested", "full"]


def _demo(folder: Path) -> Path:
    from experiments.demo_data import DemoConfig, build_demo_dataset

    # 4 photos x 2 crops x 6 variants: the last photo's 12 images (rocket_*) form the unlabelled test split
    return build_demo_dataset(folder, DemoConfig(n_sources=4, crops_per_source=2, size=48, test_sources=1))


def _run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = aigcq([*map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def _features(capsys, data, store, extractors="nss,generator"):
    rc, out = _run(capsys, "features", "--track", "image", "--data", data, "--store", store, "--extractors",
                   extractors, "--workers", "0", "--threads", "1", "--no-progress")
    assert rc == 0, out
    return out


def _regress(capsys, store, out, *extra):
    return _run(capsys, "regress", "--track", "image", "--store", store, "--out", out, *FAST_FIT, *extra)


def _predict(capsys, model, store, out, *extra):
    return _run(capsys, "predict", "--model", model, "--store", store, "--split", "test", "--out", out,
                "--bootstrap", "0", *extra)


def _replace(img: Path) -> None:
    """Other content under the same name (a later mtime, as any rewrite gives)."""
    before = img.stat().st_mtime_ns
    Image.new("RGB", (48, 48), (0, 0, 0)).save(img)
    os.utime(img, ns=(before + 2_000_000_000, before + 2_000_000_000))  # coarse-mtime filesystems too


def _refresh_command(out: str) -> list[str]:
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("refresh: ")]
    cmd = shlex.split(line.split("refresh: ", 1)[1])
    assert cmd[0] == "aigcq"
    return cmd[1:] + ["--workers", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A bundle (nss + generator) trained on a demo build; other builds of the same config have the same keys."""
    root = tmp_path_factory.mktemp("stale_model")
    data, store = _demo(root / "data"), root / "s.h5"
    from extractors.__main__ import main as ex_main
    from regressors.cli import main as reg_main

    assert ex_main(["run", "--track", "image", "--data", str(data), "--store", str(store), "--extractors",
                    "nss,generator", "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    assert reg_main(["fit", "--track", "image", "--store", str(store), "--out", str(root / "run"), *FAST_FIT]) == 0
    return root / "run" / "model"


@pytest.fixture()
def dataset(tmp_path, capsys):
    data = _demo(tmp_path / "data")
    store = tmp_path / "s.h5"
    _features(capsys, data, store)
    return data, store, data.parent / "images"


def test_a_replaced_image_is_refused_by_regress_and_predict_until_features_refresh_it(dataset, model, tmp_path,
                                                                                      capsys):
    data, store, images = dataset
    rc, out = _predict(capsys, model, store, tmp_path / "p0")
    assert rc == 0, out  # unchanged media: predict runs
    train_img = sorted(images.glob("astronaut_c0_*.png"))[1]
    test_img = sorted(images.glob("rocket_c1_*.png"))[2]  # rocket: the test photo
    _replace(train_img)
    _replace(test_img)

    rc, out = _regress(capsys, store, tmp_path / "run")
    assert rc == 2
    assert "the media of 2 item(s)" in out and train_img.stem in out and test_img.stem in out
    assert "Traceback" not in out and not (tmp_path / "run").exists()  # refused before any work
    cmd = _refresh_command(out)
    assert cmd[:2] == ["features", "--track"] and str(data) in cmd and str(store) in cmd
    assert cmd[cmd.index("--extractors") + 1].startswith("nss")  # the image key only: generator reads no pixels

    rc, out = _predict(capsys, model, store, tmp_path / "p1")
    assert rc == 2 and "the media of 1 item(s)" in out and test_img.stem in out and train_img.stem not in out
    assert not (tmp_path / "p1").exists()

    rc, out = _run(capsys, *cmd)  # the command the refusal printed
    assert rc == 0, out
    assert "2 computed" in out and train_img.stem in out  # recomputed from the new content
    rc, out = _predict(capsys, model, store, tmp_path / "p2")
    assert rc == 0, out
    rc, out = _regress(capsys, store, tmp_path / "run")
    assert rc == 0, out


def test_a_touch_alone_is_refused_and_features_re_records_it_without_recomputing(dataset, model, tmp_path, capsys):
    data, store, images = dataset
    img = sorted(images.glob("rocket_*.png"))[0]
    t = img.stat().st_mtime_ns + 5_000_000_000
    os.utime(img, ns=(t, t))
    rc, out = _predict(capsys, model, store, tmp_path / "p")
    assert rc == 2 and img.stem in out and "refresh: aigcq features" in out
    out = _features(capsys, data, store)
    assert "0 computed" in out and "changed" not in out  # same bytes: only the new mtime is recorded
    rc, out = _predict(capsys, model, store, tmp_path / "p")
    assert rc == 0, out


def test_a_missing_file_is_refused_unless_the_media_check_is_skipped(dataset, model, tmp_path, capsys):
    data, store, images = dataset
    gone = sorted(images.glob("rocket_*.png"))[3]
    gone.unlink()
    rc, out = _predict(capsys, model, store, tmp_path / "p")
    assert rc == 2 and "the media of 1 item(s)" in out and "missing" in out and gone.stem in out
    assert "--skip-media-check" in out
    rc, out = _regress(capsys, store, tmp_path / "run")
    assert rc == 2 and gone.stem in out and "missing" in out
    rc, out = _predict(capsys, model, store, tmp_path / "p", "--skip-media-check")
    assert rc == 0, out
    assert "--skip-media-check: the stored features are read without comparing" in out


def test_many_changed_items_are_counted_and_only_the_first_few_named(dataset, model, tmp_path, capsys):
    _, store, images = dataset
    test_imgs = sorted(images.glob("rocket_*.png"))
    for img in test_imgs:
        _replace(img)
    rc, out = _predict(capsys, model, store, tmp_path / "p")
    assert rc == 2 and f"the media of {len(test_imgs)} item(s)" in out and f"and {len(test_imgs) - 5} more" in out
    assert sum(img.stem in out for img in test_imgs) == 5


def test_a_label_only_store_has_no_media_to_check(tmp_path, capsys):
    # generator (meta) and prompt_minilm (text) never read the media: no fingerprint is recorded, and a store
    # made without the images (AIGIQA-20K labels only) keeps working
    data = _demo(tmp_path / "data")
    store = tmp_path / "s.h5"
    _features(capsys, data, store, "generator,prompt_minilm")
    for img in (data.parent / "images").glob("*.png"):
        img.unlink()
    rc, out = _regress(capsys, store, tmp_path / "run")
    assert rc == 0, out


def test_features_that_read_no_pixels_are_not_refused_for_changed_pixels(dataset, tmp_path, capsys):
    # the store has nss (image) and generator (meta) features; a fit on generator alone used no pixels
    _, store, images = dataset
    _replace(sorted(images.glob("astronaut_*.png"))[0])
    rc, out = _regress(capsys, store, tmp_path / "gen", "--extractors", "generator")
    assert rc == 0, out
    rc, out = _regress(capsys, store, tmp_path / "nss", "--extractors", "nss")
    assert rc == 2 and "astronaut" in out
