"""clip extractor on a tiny random open_clip ViT loaded through the real loading code."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.base import Item, WeightsNotFoundError
from extractors.clip import IQA_PAIRS, LEVELS, crop_boxes
from extractors.registry import get_extractor
from tiny_models import photo_views as images

open_clip = pytest.importorskip("open_clip")

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_tiny_openclip

    return build_tiny_openclip(tmp_path_factory.mktemp("clip"))

def items(prompts):
    return [Item(i, f"x{i}", None, p) for i, p in enumerate(prompts)]

PROMPTS = ["an astronaut", "a woman in a space suit, 8k", "", "a red flag", "cat", "NASA portrait", "a very long prompt " * 30, "a"]

@pytest.fixture(scope="module")
def ex(tiny):
    e = get_extractor("clip", model="local-dir:" + tiny["local_dir"])
    e.setup("cpu", "fp32")
    return e

def test_preprocessing_equals_open_clip(tiny, astronaut):
    _, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + tiny["local_dir"])
    e = get_extractor("clip", model="local-dir:" + tiny["local_dir"])  # transform works before setup (workers)
    for im in (astronaut, images(astronaut)[5]):
        assert torch.allclose(e.transform(im), preprocess(im), atol=1e-6)

def test_tag_preprocessing_and_quickgelu_follow_open_clip():
    from open_clip.pretrained import get_pretrained_cfg

    e = get_extractor("clip", model="ViT-L-14", pretrained="laion2b_s32b_b82k")
    assert e.preprocess_cfg()["mean"] == (0.5, 0.5, 0.5) and not e._quick_gelu()
    e = get_extractor("clip")  # default ViT-L-14 / openai
    assert get_pretrained_cfg("ViT-L-14", "openai")["quick_gelu"] and e._quick_gelu()
    assert e.preprocess_cfg()["size"] == 224 and e.output_dim() == 2 * 768 + 2 + len(IQA_PAIRS)

def test_shapes_names_and_ranges(ex, astronaut):
    x = torch.stack([ex.transform(im) for im in images(astronaut, 3)])
    out = ex.compute(x, items(PROMPTS[:3]))
    e = 32
    assert out.shape == (3, 2 * e + 2 + len(IQA_PAIRS)) and out.dtype == np.float32
    names = ex.feature_names(out.shape[1])
    assert len(set(names)) == out.shape[1] and names[2 * e] == "clip_cos" and names[-len(IQA_PAIRS)] == "clip_iqa_good_bad"
    img, txt = out[:, :e], out[:, e:2 * e]
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(out[:, 2 * e], (img * txt).sum(1), atol=1e-5)  # cosine
    assert np.all((out[:, 2 * e + 1] > 1) & (out[:, 2 * e + 1] < len(LEVELS)))
    assert np.all((out[:, -len(IQA_PAIRS):] > 0) & (out[:, -len(IQA_PAIRS):] < 1))
    assert not np.allclose(out[0, e:2 * e], out[1, e:2 * e])  # the prompt matters

def test_scores_follow_their_definition(ex, tiny, astronaut):
    """Recompute prompt embedding, five-level score and good/bad prob straight from open_clip."""
    model = open_clip.create_model("local-dir:" + tiny["local_dir"]).eval()
    tok = open_clip.get_tokenizer("local-dir:" + tiny["local_dir"])
    prompt = "a woman in a space suit"
    x = ex.transform(astronaut)[None]
    out = ex.compute(x, items([prompt]))[0]
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)[0]
        texts = [prompt] + [f"a photo that {lv} matches '{prompt}'" for lv in LEVELS] + list(IQA_PAIRS[0])
        t = torch.nn.functional.normalize(model.encode_text(tok(texts)), dim=-1)
        s = model.logit_scale.exp()
    e = 32
    np.testing.assert_allclose(out[e:2 * e], t[0].numpy(), atol=1e-5)
    p = (s * t[1:6] @ img).softmax(0)
    np.testing.assert_allclose(out[2 * e + 1], float((p * torch.arange(1, 6)).sum()), atol=1e-4)
    np.testing.assert_allclose(out[2 * e + 2], float((s * t[6:8] @ img).softmax(0)[0]), atol=1e-5)

def test_deterministic_and_batch_invariant(ex, astronaut):
    ims = images(astronaut)
    x = torch.stack([ex.transform(im) for im in ims])
    batch = ex.compute(x, items(PROMPTS))
    ex._text_cache.clear()
    again = ex.compute(x, items(PROMPTS))
    np.testing.assert_array_equal(batch, again)
    ex._text_cache.clear()
    single = np.concatenate([ex.compute(x[i:i + 1], items([PROMPTS[i]])) for i in range(8)])
    np.testing.assert_allclose(batch, single, atol=1e-5)

def test_crops(tiny, astronaut, ex):
    e4 = get_extractor("clip", model="local-dir:" + tiny["local_dir"], crops=4)
    assert e4.key() != ex.key()
    e4.setup()
    t = e4.transform(astronaut)
    assert t.shape == (15, 224, 224)
    assert torch.equal(t[:3], ex.transform(astronaut))  # view 0 is the whole resized image
    out4 = e4.compute(t[None], items(["an astronaut"]))
    out0 = ex.compute(t[None, :3], items(["an astronaut"]))
    assert out4.shape == out0.shape and not np.allclose(out4, out0)
    boxes = crop_boxes(1024, 768, 5, 224)
    assert len(boxes) == 5 and all(b[2] - b[0] == 384 and b[2] <= 1024 and b[3] <= 768 for b in boxes)
    assert (boxes[2][0], boxes[2][1]) == ((1024 - 384) // 2, (768 - 384) // 2)  # k=5: corners + centre
    with pytest.raises(ValueError, match="crops"):
        get_extractor("clip", crops=-1)

def test_checkpoint_file_with_registered_config(tiny, ex, astronaut):
    open_clip.add_model_config(tiny["config_file"])
    e = get_extractor("clip", model="tiny-clip-test", pretrained=None, checkpoint=tiny["checkpoint"])
    e.setup()
    x = e.transform(astronaut)[None]
    np.testing.assert_allclose(e.compute(x, items(["a"])), ex.compute(x, items(["a"])), atol=1e-6)
    assert e.identity()["options"]["checkpoint"]["file"] == "tiny_clip_state.pt"

def test_identity_names_model_and_versions(ex):
    ident = ex.identity()
    assert ident["options"]["model"].startswith("local-dir:")
    assert ident["preprocess"]["size"] == 224 and ident["options"]["crops"] == 0
    assert {"open_clip_torch", "torch", "timm"} <= set(ident["libraries"])

def test_missing_weights_offline_are_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="vit_large_patch14_clip_224.openai"):
        get_extractor("clip").setup()
    with pytest.raises(WeightsNotFoundError, match="laion/nonexistent-clip"):
        get_extractor("clip", model="hf-hub:laion/nonexistent-clip").setup()
    with pytest.raises(WeightsNotFoundError, match="laion/other-clip@v2"):  # spec-string form of a hub id
        get_extractor("clip:model=laion/other-clip:revision=v2").setup()
    with pytest.raises(WeightsNotFoundError, match="nothere.pt"):
        get_extractor("clip", checkpoint=str(tmp_path / "nothere.pt")).setup()
    with pytest.raises(ValueError, match="no pretrained tag 'bogus'"):
        get_extractor("clip", pretrained="bogus").setup()
