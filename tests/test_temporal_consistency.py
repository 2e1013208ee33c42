"""`temporal_consistency`: statistics on known embeddings; the extractor over a handcrafted
deterministic image base (and over effnet_lite0's real weights once that module exists)."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import video_fixtures as vf
from extractors import registry
from extractors.base import Item, ItemError
from extractors.image_base import ImageExtractor
from extractors.temporal_consistency import CONSISTENCY_FEATURES, consistency_statistics

NAMES = list(CONSISTENCY_FEATURES)


# ------------------------------------------------------------------ statistics only
def test_identical_frames_are_perfectly_consistent():
    e = np.tile(np.random.default_rng(0).normal(size=(1, 8)), (6, 1))
    np.testing.assert_allclose(consistency_statistics(e), [1, 1, 0, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(consistency_statistics(e[:1]), [1, 1, 0, 0, 1, 1])


def test_known_angles_and_one_sharp_drop():
    step = 0.1  # radians between neighbours on a circle
    ang = np.arange(8) * step
    e = np.stack([np.cos(ang), np.sin(ang)], 1) * np.linspace(1, 5, 8)[:, None]  # norms do not matter
    s = dict(zip(NAMES, consistency_statistics(e)))
    assert s["sim_mean"] == pytest.approx(np.cos(step)) and s["sim_std"] == pytest.approx(0, abs=1e-7)
    assert s["n_drops"] == 0 and s["first_last"] == pytest.approx(np.cos(7 * step))
    ang[5:] += 1.0  # a jump between frames 4 and 5
    e = np.stack([np.cos(ang), np.sin(ang)], 1)
    s = dict(zip(NAMES, consistency_statistics(e, drop_threshold=0.1)))
    assert s["n_drops"] == 1 and s["sim_min"] == pytest.approx(np.cos(1.1))
    assert dict(zip(NAMES, consistency_statistics(e, drop_threshold=0.9)))["n_drops"] == 0


# ------------------------------------------------------------------ a deterministic base
class Thumbnail(ImageExtractor):
    """Handcrafted image 'model': the centred 16x16 grey thumbnail (cosine ~ correlation)."""

    name = "tc_test_thumbnail"
    defaults = {"side": 16}

    def transform(self, image):
        g = image.convert("L").resize((self.options["side"],) * 2)
        return torch.from_numpy(np.asarray(g, dtype=np.float32) / 255.0)[None]

    def embed(self, pixels, prompts):
        x = pixels.flatten(1)
        return (x - x.mean(dim=1, keepdim=True)).cpu().numpy()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def thumbnail_base(monkeypatch):
    """Register the handcrafted base for these tests only (the registry imports extractors.<module>)."""
    mod = types.ModuleType("extractors._tc_test_base")
    mod.Thumbnail = Thumbnail
    monkeypatch.setitem(sys.modules, "extractors._tc_test_base", mod)
    monkeypatch.setitem(registry.REGISTRY, "tc_test_thumbnail",
                        registry.Entry("_tc_test_base:Thumbnail", "image", "256", "tests"))


def _tc(base="tc_test_thumbnail", **kw):
    ex = registry.get_extractor("temporal_consistency", base=base, **kw)
    ex.setup("cpu", "fp32")
    return ex


def _run(ex, paths):
    items = [Item(i, f"v{i}", str(p), "a prompt") for i, p in enumerate(paths)]
    return ex.compute(ex.collate([ex.prepare(it) for it in items]), items)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    moving = vf.moving_frames(16, (64, 64), step=(2, 1), seed=4)
    return {
        "static": vf.write_mp4(d / "static.mp4", vf.static_frames(16, (64, 64), seed=4)),
        "moving": vf.write_mp4(d / "moving.mp4", moving),
        "shuffled": vf.write_mp4(d / "shuffled.mp4", vf.shuffle_frames(moving, seed=1)),
        "gif": vf.write_gif(d / "moving.gif", vf.moving_frames(12, (48, 40), seed=5)),
    }


def test_static_moving_and_shuffled(videos):
    out = _run(_tc(n_frames=8), [videos["static"], videos["moving"], videos["shuffled"], videos["gif"]])
    assert out.shape == (4, 6) and out.dtype == np.float32 and np.isfinite(out).all()
    static, moving, shuffled = (dict(zip(NAMES, r)) for r in out[:3])
    assert static["sim_mean"] > 0.999 and static["sim_min"] > 0.999 and static["n_drops"] == 0
    assert moving["sim_mean"] < static["sim_mean"]
    assert shuffled["sim_mean"] < moving["sim_mean"] - 0.05
    assert shuffled["sim_std"] > moving["sim_std"]


def test_batch_invariant_deterministic_and_keyed(videos):
    ex = _tc(n_frames=6)
    paths = [videos["moving"], videos["gif"], videos["static"]]
    together = _run(ex, paths)
    np.testing.assert_array_equal(together, _run(ex, paths))
    np.testing.assert_allclose(np.concatenate([_run(ex, [p]) for p in paths]), together, atol=1e-6)
    assert ex.feature_names(6) == [f"temporal_consistency_{k}" for k in NAMES] and ex.output_dim() == 6
    k = ex.key()
    assert k.startswith("temporal_consistency.tc_test_thumbnail-")
    chunked = _tc(n_frames=6, frame_batch=5)  # chunking is memory only
    np.testing.assert_allclose(_run(chunked, paths), together, atol=1e-6)
    assert chunked.key() == k
    for change in ({"n_frames": 8}, {"drop_threshold": 0.2}, {"base_options": {"side": 8}}):
        other = registry.get_extractor("temporal_consistency", base="tc_test_thumbnail", **{"n_frames": 6, **change})
        assert other.key() != k
    assert ex.identity()["base"]["name"] == "tc_test_thumbnail"


def test_errors_name_the_problem(videos, tmp_path):
    with pytest.raises(ValueError, match="image extractor"):
        registry.get_extractor("temporal_consistency", base="raft_motion").setup("cpu", "fp32")
    with pytest.raises(KeyError, match="unknown extractor"):
        registry.get_extractor("temporal_consistency", base="no_such_model").setup("cpu", "fp32")
    with pytest.raises(ValueError, match="no option"):
        _tc(base_options={"sidee": 3})
    bad = tmp_path / "broken.gif"
    bad.write_bytes(b"GIF89a broken")
    with pytest.raises(ItemError, match="broken.gif"):
        _tc().prepare(Item(0, "b", str(bad)))


def _fetv_original_vs_shuffled(ex, gifs):
    """sim_mean of each real clip and of the same frames in a shuffled order."""
    orig, shuf = [], []
    for i, g in enumerate(gifs):
        it = Item(i, g.stem, str(g), "")
        frames = ex.prepare(it)
        perm = torch.from_numpy(np.random.default_rng(i).permutation(frames.shape[0]))
        out = ex.compute([frames, frames[perm]], [it, it])
        orig.append(out[0, 0])
        shuf.append(out[1, 0])
    return np.array(orig), np.array(shuf)


@pytest.mark.shared
def test_real_fetv_clips_lose_consistency_when_shuffled(shared_data):
    gifs = sorted((shared_data / "fetv" / "videos").glob("*/*.gif"))[::29][:6]
    orig, shuf = _fetv_original_vs_shuffled(_tc(n_frames=16), gifs)
    assert np.all(orig > 0.5) and np.mean(orig - shuf) > 0.02
    assert np.sum(orig > shuf) >= len(gifs) - 1  # nearly static clips may tie


@pytest.mark.shared
def test_real_fetv_with_effnet_lite0_real_weights(shared_data):
    try:
        ex = _tc(base="effnet_lite0", n_frames=16)
    except (ImportError, ModuleNotFoundError) as err:  # written by another engineer in parallel
        pytest.skip(f"effnet_lite0 is not available yet: {err}")
    gifs = sorted((shared_data / "fetv" / "videos").glob("*/*.gif"))[::29][:3]
    orig, shuf = _fetv_original_vs_shuffled(ex, gifs)
    assert np.all(orig > 0.5) and np.all(orig > shuf) and np.mean(orig - shuf) > 0.03
    frozen = ex.prepare(Item(0, "f", str(gifs[0])))[:1].repeat(4, 1, 1, 1)
    assert ex.compute([frozen], [Item(0, "f", str(gifs[0]))])[0, 0] > 0.999
