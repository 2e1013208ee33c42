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
