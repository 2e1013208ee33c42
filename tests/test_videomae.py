"""`videomae`: tiny random-weight VideoMAE checkpoints saved offline, real FETV GIFs for decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import video_fixtures as vf
from extractors.base import Item, ItemError, WeightsNotFoundError
from extractors.registry import get_extractor
from extractors.videomae import VideoMAEPreprocess, clip_indices

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VideoMAEImageProcessor,
    VideoMAEModel,
)

KINETICS_MEAN, KINETICS_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _tiny_config(**kw):
    return VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                          num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **kw)


def _processor():
    return VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                  image_mean=KINETICS_MEAN, image_std=KINETICS_STD)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """Self-supervised layout: use_mean_pooling=False -> final LayerNorm on every token."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("videomae_base")
    VideoMAEModel(_tiny_config(use_mean_pooling=False)).save_pretrained(path)
    _processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_kinetics(tmp_path_factory):
    """Finetuned layout: use_mean_pooling=True, the classifier's fc_norm on the mean token."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("videomae_k")
    model = VideoMAEForVideoClassification(_tiny_config(use_mean_pooling=True, num_labels=5))
    with torch.no_grad():  # make fc_norm non-trivial so skipping it would show
        model.fc_norm.weight.uniform_(0.5, 2.0)
        model.fc_norm.bias.uniform_(-1, 1)
    model.save_pretrained(path)
    _processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "moving_mp4": vf.write_mp4(d / "moving.mp4", vf.moving_frames(24, (48, 64), seed=1)),
        "static_gif": vf.write_gif(d / "static.gif", vf.static_frames(10, (40, 40), seed=2)),
        "moving_gif": vf.write_gif(d / "moving.gif", vf.moving_frames(16, (40, 56), seed=3)),
    }


def _item(path, i=0):
    return Item(i, f"v{i}", str(path), "a prompt")


def _setup(path, **kw):
    ex = get_extractor("videomae", model=str(path), **kw)
    ex.setup("cpu", "fp32")
    return ex


def _run(ex, paths):
    items = [_item(p, i) for i, p in enumerate(paths)]
    return ex.compute(ex.collate([ex.prepare(it) for it in items]), items)


# ------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("hw", [(100, 150), (150, 100), (512, 512), (120, 160)])
def test_preprocessing_equals_the_library_processor(hw):
    """Kinetics settings (shortest edge 224, crop 224, ImageNet mean/std) on odd frame sizes."""
    proc = VideoMAEImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                  image_mean=KINETICS_MEAN, image_std=KINETICS_STD)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(3)]
    ref = proc(frames, return_tensors="pt")["pixel_values"][0]  # [T, 3, 224, 224]
    ours_pre = VideoMAEPreprocess(proc)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    ours = ours_pre.normalize(ours_pre.geometry(x))
    assert ours.shape == ref.shape == (3, 3, 224, 224)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)


def test_preprocessing_reads_the_checkpoint_settings(tiny_base):
    pre = VideoMAEPreprocess(VideoMAEImageProcessor.from_pretrained(tiny_base))
    assert pre.crop == (32, 32) and pre.shortest_edge == 32 and pre.mean == KINETICS_MEAN


# ------------------------------------------------------------------ clip sampling
def test_clips_are_consecutive_segments():
    idx = clip_indices(96, 2, 16)
    assert idx.shape == (2, 16)
    assert idx[0].max() < 48 <= idx[1].min()  # first clip in the first half, second in the second
    assert np.all(np.diff(idx.reshape(-1)) > 0)  # strictly increasing when frames suffice
    short = clip_indices(16, 2, 16)  # FETV 16-frame GIF: frames repeat, order kept
    assert short.min() == 0 and short.max() == 15 and np.all(np.diff(short.reshape(-1)) >= 0)
    assert clip_indices(5, 1, 4).tolist() == [[0, 1, 3, 4]]


# ------------------------------------------------------------------ the extractor
def test_shapes_and_names(tiny_base, videos):
    ex = _setup(tiny_base, n_clips=3)
    prepared = ex.prepare(_item(videos["moving_mp4"]))
    assert prepared.dtype == torch.uint8 and tuple(prepared.shape) == (3, 4, 3, 32, 32)
    out = _run(ex, [videos["moving_mp4"], videos["moving_gif"]])
    assert out.shape == (2, 64) and out.dtype == np.float32 and np.isfinite(out).all()
    assert ex.output_dim() == 64 and ex.feature_names(64)[32] == "videomae_std_0"
    assert np.all(out[:, 32:] > 0)  # moving clips differ between clips


def test_vector_follows_the_config_layernorm_tokens(tiny_base, videos):
    ex = _setup(tiny_base, n_clips=1)
    assert ex.fc_norm is None and ex.model.layernorm is not None
    clip = ex.prepare(_item(videos["moving_mp4"]))
    ref = VideoMAEModel.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        want = ref(pixel_values=ex.preprocess.normalize(clip)).last_hidden_state.mean(1)
    got = ex.compute(clip[None], [_item(videos["moving_mp4"])])
    np.testing.assert_allclose(got[0, :32], want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[0, 32:], 0.0, atol=1e-6)  # one clip: no spread


def test_vector_is_what_the_kinetics_classifier_reads(tiny_kinetics, videos):
    """use_mean_pooling: fc_norm(mean token); the library's classifier on our vector gives its logits."""
    ex = _setup(tiny_kinetics, n_clips=2)
    assert ex.fc_norm is not None and ex.model.layernorm is None
    clips = ex.prepare(_item(videos["moving_gif"]))
    full = VideoMAEForVideoClassification.from_pretrained(tiny_kinetics).eval()
    with torch.no_grad():
        logits = full(pixel_values=ex.preprocess.normalize(clips)).logits  # [2 clips, 5]
        ours = ex.clip_vectors(clips)
        torch.testing.assert_close(full.classifier(ours), logits, atol=1e-5, rtol=1e-4)


def test_deterministic_and_batch_invariant(tiny_base, videos):
    ex = _setup(tiny_base)
    paths = [videos["moving_mp4"], videos["static_gif"], videos["moving_gif"]]
    together = _run(ex, paths)
    np.testing.assert_array_equal(together, _run(ex, paths))
    alone = np.concatenate([_run(ex, [p]) for p in paths])
    np.testing.assert_allclose(together, alone, atol=2e-5)
    ex2 = _setup(tiny_base, clip_batch=1)  # chunking is memory only
    np.testing.assert_allclose(_run(ex2, paths), together, atol=2e-5)
    assert ex2.key() == ex.key()


def test_static_video_has_no_spread_between_clips(tiny_base, videos):
    out = _run(_setup(tiny_base), [videos["static_gif"]])
    np.testing.assert_allclose(out[0, 32:], 0.0, atol=1e-5)


def test_clip_count_and_weights_enter_the_key(tiny_base, tiny_kinetics):
    a = get_extractor("videomae", model=str(tiny_base))
    assert a.key() != get_extractor("videomae", model=str(tiny_base), n_clips=4).key()
    assert a.key() != get_extractor("videomae", model=str(tiny_kinetics)).key()
    assert a.key() != get_extractor("videomae", model=str(tiny_base), revision="abc").key()


def test_bad_items_and_missing_weights(tiny_base, tmp_path):
    ex = _setup(tiny_base)
    with pytest.raises(ItemError, match="file not found"):
        ex.prepare(_item(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ItemError, match="cannot decode"):
        ex.prepare(_item(bad))
    with pytest.raises(WeightsNotFoundError, match="no-such-org/videomae-x"):
        get_extractor("videomae", model="no-such-org/videomae-x").setup("cpu", "fp32")
    with pytest.raises(ValueError, match="no option"):
        get_extractor("videomae", n_clip=3)


@pytest.mark.shared
def test_real_fetv_gifs_decode_to_clips(tiny_base, shared_data):
    ex = _setup(tiny_base)
    gifs = sorted((shared_data / "fetv" / "videos").glob("*/*.gif"))
    assert gifs, "FETV GIFs missing"
    picks = [gifs[0], gifs[len(gifs) // 2], gifs[-1]]
    out = _run(ex, picks)
    assert out.shape == (3, 64) and np.isfinite(out).all()
