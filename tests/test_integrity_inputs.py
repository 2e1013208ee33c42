"""Issue 12, input side: what the user's dataset says is checked, not trusted.

* media kind vs track: videos on the image track were silently frame 0, images on the video
  track 1-frame videos, FETV on the image track ran without a word;
* label-table traps: a guessed target column, a generator regex that matches some names,
  no generator at all, `describe` counting problems without naming them;
* a symlink inside the dataset root that leads outside it;
* composite item ids for tables whose file names repeat across generators.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from video_fixtures import moving_frames, write_gif, write_mp4  # noqa: E402

from extractors.base import ItemError  # noqa: E402
from extractors.kindcheck import check_media_kind  # noqa: E402
from extractors.media import load_image, media_kind, read_video_frames  # noqa: E402
from features_store import load_dataset  # noqa: E402


def _png(path: Path, seed: int = 0, size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _table(folder: Path, names: list[str], **cols) -> Path:
    df = pd.DataFrame({"name": names, "prompt": [f"prompt {i}" for i in range(len(names))],
                       "mos": np.arange(len(names), dtype=float), **cols})
    df.to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


# ---------------------------------------------------------------- media kind vs track
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    frames = moving_frames(6, (48, 48))
    return {"gif": write_gif(d / "clip.gif", frames), "mp4": write_mp4(d / "clip.mp4", frames),
            "png": _png(d / "still.png"), "gif1": write_gif(d / "one.gif", frames[:1])}


def test_media_kind_by_content(media, tmp_path):
    assert media_kind(str(media["gif"])) == "video" and media_kind(str(media["mp4"])) == "video"
    assert media_kind(str(media["png"])) == "image" and media_kind(str(media["gif1"])) == "image"
    disguised = tmp_path / "clip.png"  # the name lies; the content decides
    disguised.write_bytes(media["mp4"].read_bytes())
    assert media_kind(str(disguised)) == "video"


def test_a_video_is_not_silently_frame_0_on_the_image_track(media):
    """Before: load_image(animated GIF) returned its frame 0 without a word."""
    with pytest.raises(ItemError, match=r"clip.gif is animated .*TRACK=video.*--allow-media-mismatch"):
        load_image(media["gif"])
    with pytest.raises(ItemError, match=r"clip.mp4 is a video: the image track reads images; use TRACK=video"):
        load_image(media["mp4"])
    assert load_image(media["gif"], allow_animated=True).size == (48, 48)  # frame 0, on request
    assert load_image(media["mp4"], allow_animated=True).size == (48, 48)
    assert load_image(media["gif1"]).size == (48, 48)  # a one-frame GIF is an image


def test_an_image_is_not_silently_a_1_frame_video(media):
    """Before: read_video_frames(PNG) returned one frame; motion statistics of it are all zero."""
    with pytest.raises(ItemError, match=r"still.png is a still image: the video track reads videos.*TRACK=image"):
        read_video_frames(media["png"], 8)
    assert len(read_video_frames(media["png"], 8, allow_still=True)) == 1
    assert len(read_video_frames(media["gif"], 4)) == 4


def _fetv_like(folder: Path, gif: Path) -> Path:
    (folder / "videos").mkdir(parents=True)
    names = [f"m_{i}.gif" for i in range(3)]
    for n in names:
        (folder / "videos" / n).write_bytes(gif.read_bytes())
    pd.DataFrame({"name": names, "model": "cogvideo", "ai_generated": 1, "prompt_id": [0, 1, 2],
                  "prompt": ["a", "b", "c"], "static_quality": 3.0, "temporal_quality": 3.0,
                  "alignment": 3.0}).to_csv(folder / "labels.csv", index=False)
    return folder


def test_fetv_on_the_image_track_is_refused(media, tmp_path):
    """Before: FETV ran on TRACK=image (frame 0 of each GIF) although the adapter knows it is video."""
    m = load_dataset(_fetv_like(tmp_path / "fetv", media["gif"]))
    assert m.adapter == "fetv" and m.media == "video"
    with pytest.raises(ValueError, match=r"holds videos but the track is image: use TRACK=video"):
        check_media_kind(m, "image")
    assert check_media_kind(m, "video") == []
    assert "frame 0" in check_media_kind(m, "image", allow=True)[0]


def test_a_table_of_videos_or_images_on_the_wrong_track_is_refused_by_content(media, tmp_path):
    for i in range(3):
        (tmp_path / f"v{i}.gif").write_bytes(media["gif"].read_bytes())
        _png(tmp_path / f"i{i}.png", seed=i)
    videos = load_dataset(_table(tmp_path, [f"v{i}.gif" for i in range(3)]))
    with pytest.raises(ValueError, match=r"3 of 3 sampled media files are videos \(by content"):
        check_media_kind(videos, "image")
    images = load_dataset(_table(tmp_path, [f"i{i}.png" for i in range(3)]))
    with pytest.raises(ValueError, match=r"3 of 3 sampled media files are images .* track is video"):
        check_media_kind(images, "video")
    mixed = load_dataset(_table(tmp_path, ["i0.png", "i1.png", "v0.gif"]))
    (note,) = check_media_kind(mixed, "image")  # mixed: a warning; each video fails by name
    assert "1 of 3 sampled media files are videos" in note
    (tmp_path / "y.yaml").write_text("adapter: table\nlabels: labels.csv\nmedia: video\n")
    assert load_dataset(tmp_path / "y.yaml").media == "video"


def test_the_feature_run_refuses_and_the_flag_allows(media, tmp_path):
    from extractors.__main__ import main
    from extractors.runner import run_extraction
    from extractors.registry import get_extractor

    for i in range(2):
        (tmp_path / f"v{i}.gif").write_bytes(media["gif"].read_bytes())
    labels = _table(tmp_path, ["v0.gif", "v1.gif"])
    store = tmp_path / "s.h5"
    args = ["run", "--track", "image", "--data", str(labels), "--extractors", "nss", "--store", str(store),
            "--no-progress", "--workers", "0"]
    assert main(args) == 2 and not store.exists()
    assert main([*args, "--allow-media-mismatch"]) == 0
    # a mixed table: the video item fails with its reason, the image is computed
    _png(tmp_path / "i0.png")
    mixed = load_dataset(_table(tmp_path, ["i0.png", "v0.gif"]))
    s = run_extraction(mixed, get_extractor("nss"), tmp_path / "m.h5", workers=0, progress=False)
    assert s.done == 1 and s.failed == 1 and "is animated" in s.failures[0][1]


# ---------------------------------------------------------------- label-table traps
def _agiqa_like(folder: Path) -> Path:
    """AGIQA-3K's naming: capitals and dots in generator names; a MOS column that is not the target."""
    names = ["AttnGAN_normal_000.jpg", "DALLE2_normal_001.jpg", "glide_normal_002.jpg",
             "midjourney_lowstep_003.jpg", "sd1.5_highcorr_004.jpg", "sdxl_normal_005.jpg"]
    pd.DataFrame({"name": names, "prompt": list("abcdef"), "MOS": [9.0, 8, 7, 6, 5, 4],
                  "mos_quality": [3.0, 2.5, 2, 1.5, 1, 0.5]}).to_csv(folder / "data.csv", index=False)
    return folder / "data.csv"


def test_a_guessed_target_column_is_named_loudly(tmp_path):
    """Before: an unmapped mos silently took the column 'MOS' (in AGIQA-3K-like files, not the rating)."""
    from features_store.__main__ import main

    csv = _agiqa_like(tmp_path)
    m = load_dataset(csv)
    assert list(m.df["mos"]) == [9.0, 8, 7, 6, 5, 4]  # still the guess (compatible), but said
    (note,) = [n for n in m.notes if "target" in n]
    assert "column 'MOS' is used as the rating to predict (guessed" in note and "columns: {mos: <column>}" in note
    mapped = load_dataset(csv, columns={"mos": "mos_quality"})
    assert not [n for n in mapped.notes if "target" in n]
    # `describe` carries it, and says it on stderr too
    (tmp_path / "d.yaml").write_text("adapter: table\nlabels: data.csv\n")
    assert main(["describe", str(tmp_path / "d.yaml")]) == 0


def test_describe_names_every_problem_and_warning(tmp_path, capsys):
    """Before: describe printed "problems": 1 and nothing else."""
    from features_store.__main__ import main

    _agiqa_like(tmp_path)
    (tmp_path / "a.yaml").write_text("adapter: table\nlabels: data.csv\ncolumns: {mos: mos_quality}\n"
                                     "generator_regex: '^(?P<generator>[a-z0-9]+)_'\n")
    df = pd.read_csv(tmp_path / "data.csv")
    pd.concat([df, df.iloc[[5]]]).to_csv(tmp_path / "data.csv", index=False)  # a duplicate id
    assert main(["describe", str(tmp_path / "a.yaml")]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["problem_count"] == 1 and out["problems"] == ["sdxl_normal_005.jpg (row 6): duplicate item_id "
                                                             "(first at row 5): the same item listed twice (same "
                                                             "file by 'sdxl'); keep one row"]
    (warning,) = out["warnings"]
    # the README's own regex: 4 of 7 rows (2 of 5 generator names among the first) get a generator
    assert "matches 4 of 7 items; 3 have no generator (e.g. 'AttnGAN_normal_000.jpg'" in warning
    assert "warning: generator_regex" in cap.err
    fixed = load_dataset(tmp_path / "a.yaml", generator_regex="^(?P<generator>[^_]+)_")
    assert fixed.df["generator"].notna().all() and not [n for n in fixed.notes if "generator" in n]
    assert sorted(fixed.df["generator"].unique()) == ["AttnGAN", "DALLE2", "glide", "midjourney", "sd1.5", "sdxl"]


def test_no_generator_at_all_is_said(tmp_path):
    """Before: a constant `generator` column with no word."""
    m = load_dataset(_table(tmp_path, ["a.png", "b.png"]))
    (note,) = m.notes
    assert "no item has a generator" in note and "constant column" in note
    with_col = load_dataset(_table(tmp_path, ["a.png", "b.png", "c.png"], generator=["x", "", "y"]))
    (note,) = with_col.notes
    assert "column 'generator' (generator) fills 2 of 3 items; 1 have no generator (e.g. 'b.png')" in note
    assert load_dataset(_table(tmp_path, ["a.png"], generator=["x"])).notes == []


def test_the_feature_run_prints_the_warnings(tmp_path, capsys):
    from extractors.__main__ import main

    csv = _agiqa_like(tmp_path)
    assert main(["run", "--track", "image", "--data", str(csv), "--extractors", "generator", "--store",
                 str(tmp_path / "s.h5"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: data.csv: the target 'mos' is not mapped, so column 'MOS'" in err
    assert "warning: dataset 'data': no item has a generator" in err


# ---------------------------------------------------------------- symlinks out of the root
def test_a_symlink_out_of_the_dataset_root_is_flagged(tmp_path):
    """Before: a link inside the root to a file elsewhere was opened like any other item."""
    from features_store.manifest import ManifestError

    outside = _png(tmp_path / "elsewhere" / "secret.png")
    root = tmp_path / "ds"
    _png(root / "ok.png")
    (root / "link.png").symlink_to(outside)
    (root / "inside_link.png").symlink_to(root / "ok.png")  # a link that stays inside is fine
    (root / "sub").symlink_to(tmp_path / "elsewhere")  # a linked folder leads out too
    labels = _table(root, ["ok.png", "link.png", "inside_link.png", "sub/secret.png"])
    m = load_dataset(labels)
    bad = {p.item_id: p.reason for p in m.problems(check_media=False)}
    assert set(bad) == {"link.png", "sub/secret.png"}
    assert f"is a symlink to {outside.resolve()}, outside the dataset root" in bad["link.png"]
    assert "allow_outside_links: true" in bad["link.png"]
    with pytest.raises(ManifestError, match="symlink"):
        m.validate("stop", check_media=False)
    kept, problems = m.validate("skip")
    assert sorted(kept.df["item_id"]) == ["inside_link.png", "ok.png"] and len(problems) == 2
    assert load_dataset(labels, allow_outside_links=True).problems() == []  # the explicit opt-in
    (root / "d.yaml").write_text("adapter: table\nlabels: labels.csv\nallow_outside_links: true\n")
    assert load_dataset(root / "d.yaml").problems() == []


def test_the_feature_run_refuses_a_link_out_of_the_root(tmp_path):
    from extractors.__main__ import main

    outside = _png(tmp_path / "elsewhere" / "x.png")
    root = tmp_path / "ds"
    _png(root / "ok.png")
    (root / "link.png").symlink_to(outside)
    labels = _table(root, ["ok.png", "link.png"])
    base = ["run", "--track", "image", "--data", str(labels), "--extractors", "generator", "--no-progress"]
    assert main([*base, "--store", str(tmp_path / "a.h5")]) == 2
    assert main([*base, "--store", str(tmp_path / "b.h5"), "--on-invalid", "skip"]) == 0
    from features_store import FeatureStore

    with FeatureStore(tmp_path / "b.h5", "r") as st:
        assert list(st.item_ids()) == ["ok.png"]  # the linked item is left out, listed in the report
    assert "symlink" in (tmp_path / "b.h5.invalid.csv").read_text()
    assert main([*base, "--store", str(tmp_path / "c.h5"), "-O", "allow_outside_links=true"]) == 0


# ---------------------------------------------------------------- composite item ids
def _per_model_folders(root: Path) -> Path:
    for model in ("sd15", "dalle"):
        for i in range(2):
            _png(root / model / f"{i:03d}.png", seed=i)
    pd.DataFrame({"model": ["sd15", "sd15", "dalle", "dalle"], "image": ["000.png", "001.png", "000.png", "001.png"],
                  "prompt": ["a", "b", "a", "b"], "mos": [1.0, 2, 3, 4]}).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_file_names_repeating_across_generators_take_a_composite_id(tmp_path):
    """Before: only one column could be the id: four rows, two 'duplicate item_id' problems."""
    from features_store.manifest import ManifestError

    _per_model_folders(tmp_path)
    (tmp_path / "plain.yaml").write_text("adapter: table\nlabels: labels.csv\n"
                                         "columns: {item_id: image, generator: model}\n")
    with pytest.raises(ManifestError) as exc:
        load_dataset(tmp_path / "plain.yaml").validate("stop")
    msg = str(exc.value)
    assert "ON_INVALID=skip" in msg and "--on-invalid skip" in msg and "item_id: [model, image]" in msg  # the table's own columns
    (tmp_path / "c.yaml").write_text("adapter: table\nlabels: labels.csv\n"
                                     "columns: {item_id: [model, image], generator: model}\n")
    m = load_dataset(tmp_path / "c.yaml")
    assert list(m.df["item_id"]) == ["sd15/000.png", "sd15/001.png", "dalle/000.png", "dalle/001.png"]
    assert list(m.df["path"]) == list(m.df["item_id"]) and m.validate("stop")[1] == []  # files found
    (tmp_path / "t.yaml").write_text("adapter: table\nlabels: labels.csv\ncolumns: {item_id: '{model}_{image}', "
                                     "path: image, generator: model}\n")
    t = load_dataset(tmp_path / "t.yaml")
    assert list(t.df["item_id"]) == ["sd15_000.png", "sd15_001.png", "dalle_000.png", "dalle_001.png"]
    (tmp_path / "bad.yaml").write_text("adapter: table\nlabels: labels.csv\ncolumns: {item_id: [modle, image]}\n")
    with pytest.raises(ValueError, match=r"column 'modle' \(in the composite item_id\) not found. Did you mean 'model'"):
        load_dataset(tmp_path / "bad.yaml")
