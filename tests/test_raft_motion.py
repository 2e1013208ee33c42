"""`raft_motion`: statistics checked on synthetic flows; the extractor on random-weight raft_small."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import video_fixtures as vf
from extractors.base import Item, ItemError, WeightsNotFoundError
from extractors.media import read_video_frames
from extractors.raft_motion import MOTION_FEATURES, motion_statistics, working_size
from extractors.registry import get_extractor

NAMES = list(MOTION_FEATURES)


def stats(flow, frames, **kw):
    return dict(zip(NAMES, motion_statistics(flow, frames, **kw).tolist()))


def _frames(arrs):
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0


# ------------------------------------------------------------------ statistics only
def test_zero_flow_on_a_static_clip_is_all_zero_motion():
    frames = _frames(vf.static_frames(6, (40, 48)))
    s = stats(torch.zeros(5, 2, 40, 48), frames)
    assert s["static_share"] == 1.0 and s["static_pair_share"] == 1.0
    others = {k: v for k, v in s.items() if k not in ("static_share", "static_pair_share")}
    assert all(abs(v) < 1e-6 for v in others.values()), others  # grid_sample rounding ~1e-8


def test_translation_gives_its_magnitude_and_zero_warp_error():
    dx, dy = 3, 4
    arrs = vf.moving_frames(5, (48, 64), step=(dx, dy))
    flow = torch.zeros(4, 2, 48, 64)
    flow[:, 0], flow[:, 1] = dx, dy
    s = stats(flow, _frames(arrs))
    for k in ("mag_mean", "mag_p10", "mag_p50", "mag_p99", "mag_pair_max", "global_mag_mean"):
        assert s[k] == pytest.approx(5.0, abs=1e-4), k
    for k in ("mag_std", "accel_mean", "jerk_mean", "global_accel_mean", "zoom_abs_mean", "rotation_abs_mean",
              "local_mag_mean", "local_share", "static_share"):
        assert abs(s[k]) < 1e-3, (k, s[k])
    assert s["coherence"] == pytest.approx(1.0, abs=1e-5)
    assert s["frame_diff_mean"] > 0.02 and s["warp_err_mean"] < 1e-5  # the flow explains every change
    assert s["warp_ratio"] < 1e-3
    # pixels whose target x+3 / y+4 leaves the 48x64 frame
    assert s["out_of_view_share"] == pytest.approx(1 - (44 * 61) / (48 * 64), abs=1e-4)
    wrong = stats(-flow, _frames(arrs))  # the opposite flow does not explain the frames
    assert wrong["warp_err_mean"] > 10 * max(s["warp_err_mean"], 1e-4)


def test_acceleration_and_jerk_of_a_speeding_translation():
    flow = torch.zeros(3, 2, 16, 16)
    flow[0, 0], flow[1, 0], flow[2, 0] = 1.0, 3.0, 7.0
    s = stats(flow, torch.rand(4, 3, 16, 16))
    assert s["accel_mean"] == pytest.approx(3.0)  # |3-1| and |7-3|
    assert s["jerk_mean"] == pytest.approx(2.0)  # |7 - 6 + 1|
    assert s["global_accel_mean"] == pytest.approx(3.0)
    assert s["accel_rel"] == pytest.approx(3.0 / (11 / 3), rel=1e-4)
    assert s["mag_pair_max"] == pytest.approx(7.0)


def test_zoom_is_global_not_local():
    h, w, rate = 32, 48, 0.05
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    flow = torch.stack([rate * xx, rate * yy])[None].repeat(2, 1, 1, 1)
    s = stats(flow, torch.rand(3, 3, h, w))
    assert s["zoom_abs_mean"] == pytest.approx(rate, rel=1e-3)
    assert s["rotation_abs_mean"] < 1e-5 and s["local_share"] < 1e-6 and s["global_mag_mean"] < 0.05
    assert s["coherence"] < 0.05  # vectors point every way


def test_one_moving_object_is_local_motion_and_flicker_is_seen():
    flow = torch.zeros(2, 2, 32, 32)
    flow[:, 0, 8:16, 8:16] = 4.0  # a small square moves, the rest is still
    frames = (torch.rand(1, 3, 32, 32) * 0.5).repeat(3, 1, 1, 1)
    frames[1] += 0.2  # brightness jump on the middle frame
    s = stats(flow, frames)
    assert s["local_share"] > 0.5 and s["global_mag_mean"] == 0.0
    assert s["static_share"] == pytest.approx(1 - 64 / 1024)
    assert s["flicker"] == pytest.approx(0.2, abs=1e-4)


def test_statistics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="P\\+1"):
        motion_statistics(torch.zeros(3, 2, 8, 8), torch.zeros(3, 3, 8, 8))


def test_working_size_is_divisible_by_8_and_keeps_aspect():
    assert working_size(512, 512, 256) == (256, 256)
    assert working_size(160, 288, 256) == (256, 464)
    assert working_size(240, 240, 256) == (256, 256)
    h, w = working_size(120, 160, 100)
    assert h % 8 == 0 and w % 8 == 0 and abs(w / h - 4 / 3) < 0.1


# ------------------------------------------------------------------ the extractor (random raft_small)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def raft_small_path(tmp_path_factory):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "static": vf.write_mp4(d / "static.mp4", vf.static_frames(8, (48, 48))),
        "moving": vf.write_mp4(d / "moving.mp4", vf.moving_frames(8, (48, 64), step=(3, 1))),
        "gif": vf.write_gif(d / "moving.gif", vf.moving_frames(6, (40, 40))),
    }


def _ex(path, **kw):
    # tiny on purpose: random raft_small costs ~1 s per pair at 128 px on a busy 2-core box
    kw = {"size": 128, "n_frames": 4, "num_flow_updates": 2, **kw}
    ex = get_extractor("raft_motion", model="raft_small", weights=str(path), **kw)
    ex.setup("cpu", "fp32")
    return ex


def _run(ex, paths):
    items = [Item(i, f"v{i}", str(p)) for i, p in enumerate(paths)]
    return ex.compute(ex.collate([ex.prepare(it) for it in items]), items)


def test_extractor_shapes_names_and_identical_frames(raft_small_path, videos):
    ex = _ex(raft_small_path)
    x = ex.prepare(Item(0, "v", str(videos["moving"])))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (4, 3, 128, 168)
    out = _run(ex, [videos["static"], videos["moving"], videos["gif"]])
    assert out.shape == (3, len(NAMES)) == (3, ex.output_dim()) and np.isfinite(out).all()
    assert ex.feature_names(out.shape[1])[0] == "raft_motion_mag_mean"
    s = dict(zip(NAMES, out[0]))
    # Random weights do not give zero flow on identical frames, but the same flow for every
    # identical pair: no acceleration, no jerk, no photometric change.
    for k in ("accel_mean", "jerk_mean", "global_accel_mean", "mag_pair_std", "frame_diff_mean", "flicker"):
        assert abs(s[k]) < 1e-4, (k, s[k])
    assert dict(zip(NAMES, out[1]))["frame_diff_mean"] > 0.01


def test_deterministic_and_batch_invariant(raft_small_path, videos):
    ex = _ex(raft_small_path, n_frames=3)
    paths = [videos["gif"], videos["static"]]
    together = _run(ex, paths)
    np.testing.assert_array_equal(together, _run(ex, paths))
    alone = np.concatenate([_run(ex, [p]) for p in paths])
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4)
    one_pair = _ex(raft_small_path, n_frames=3, pair_batch=1)
    np.testing.assert_allclose(_run(one_pair, paths), together, rtol=1e-4, atol=1e-4)
    assert one_pair.key() == ex.key()


def test_sampling_resolution_and_model_enter_the_key(raft_small_path):
    base = get_extractor("raft_motion", weights=str(raft_small_path))
    for change in ({"n_frames": 8}, {"size": 128}, {"model": "raft_small"}, {"num_flow_updates": 6},
                   {"weights": "default"}):
        assert get_extractor("raft_motion", **{"weights": str(raft_small_path), **change}).key() != base.key()


def test_missing_and_wrong_weights_are_clear(raft_small_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(WeightsNotFoundError, match="raft_large_C_T_SKHT_V2.*weights="):
        get_extractor("raft_motion").setup("cpu", "fp32")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        get_extractor("raft_motion", weights=str(tmp_path / "none.pth")).setup("cpu", "fp32")
    with pytest.raises(WeightsNotFoundError, match="do not fit"):  # raft_small state dict into raft_large
        get_extractor("raft_motion", model="raft_large", weights=str(raft_small_path)).setup("cpu", "fp32")


def test_bad_videos_are_item_errors(raft_small_path, tmp_path):
    with pytest.raises(ValueError, match="at least 128"):
        _ex(raft_small_path, size=64)
    ex = _ex(raft_small_path)
    one = vf.write_gif(tmp_path / "one.gif", vf.static_frames(1, (32, 32)))
    with pytest.raises(ItemError, match="at least 2|is a still image"):  # a one-frame GIF is an image
        ex.prepare(Item(0, "one", str(one)))
    with pytest.raises(ItemError, match="file not found"):
        ex.prepare(Item(1, "missing", str(tmp_path / "missing.mp4")))


@pytest.mark.shared
def test_real_fetv_clip_and_its_frozen_copy(raft_small_path, shared_data):
    """A real generated GIF decodes and gives finite stats; repeating its first frame gives no motion."""
    gif = sorted((shared_data / "fetv" / "videos" / "zeroscope").glob("*.gif"))[0]
    ex = _ex(raft_small_path, n_frames=4)
    real = ex.prepare(Item(0, "fetv", str(gif)))
    frozen = real[:1].repeat(real.shape[0], 1, 1, 1)
    out = ex.compute([real, frozen], [Item(0, "a", str(gif)), Item(1, "b", str(gif))])
    assert np.isfinite(out).all()
    real_s, frozen_s = dict(zip(NAMES, out[0])), dict(zip(NAMES, out[1]))
    assert real_s["frame_diff_mean"] > 0.005 and frozen_s["frame_diff_mean"] == 0.0
    assert frozen_s["accel_mean"] < 1e-4 and real_s["accel_mean"] > frozen_s["accel_mean"]
    # the stats with true zero flow on the frozen clip: no motion at all
    frames = frozen.float() / 255
    zero = dict(zip(NAMES, motion_statistics(torch.zeros(frames.shape[0] - 1, 2, *frames.shape[-2:]), frames)))
    assert zero["mag_mean"] == 0 and zero["warp_err_mean"] < 1e-6 and zero["static_share"] == 1
    assert len(read_video_frames(gif, 0, "all")) >= 4


def test_runner_stores_rows_and_the_reason_for_a_broken_video(raft_small_path, videos, tmp_path):
    from extractors.runner import run_extraction

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    items = [Item(0, "ok", str(videos["gif"])), Item(1, "bad", str(bad))]
    ex = get_extractor("raft_motion", model="raft_small", weights=str(raft_small_path), size=128, n_frames=3,
                       num_flow_updates=2)
    summary = run_extraction(items, ex, tmp_path / "s.h5", batch_size=2, workers=0, progress=False)
    assert (summary.done, summary.failed, summary.dim) == (1, 1, len(NAMES))
    assert "bad.mp4" in summary.failures[0][1]
