"""dinov2 extractor on a tiny random Dinov2Model saved and loaded with from_pretrained."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.base import Item, WeightsNotFoundError
from extractors.registry import get_extractor
from tiny_models import photo_views as images

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_tiny_dinov2

    return build_tiny_dinov2(tmp_path_factory.mktemp("dinov2"))

def items(n):
    return [Item(i, f"x{i}", None, "") for i in range(n)]

@pytest.fixture(scope="module")
def ex(tiny):
    e = get_extractor("dinov2", model=tiny)
    e.setup("cpu", "fp32")
    return e

def test_preprocessing_equals_checkpoint_processor(tiny, astronaut):
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(tiny)
    e = get_extractor("dinov2", model=tiny)  # before setup, as in a DataLoader worker
    wide = astronaut.crop((0, 0, 512, 301))
    for im in (astronaut, wide):
        ref = proc(images=im, return_tensors="pt")["pixel_values"][0]
        assert torch.allclose(e.transform(im), ref, atol=1e-6)
    # and it is DINOv2's evaluation recipe: resize 256 bicubic, centre crop 224, ImageNet mean/std
    import torchvision.transforms.v2 as T

    recipe = T.Compose([
        T.PILToTensor(), T.Resize(256, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(224),
        T.ToDtype(torch.float32, scale=True), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    assert torch.allclose(e.transform(astronaut), recipe(astronaut), atol=1e-5)

def test_size_option_overrides_processor(tiny, astronaut):
    from transformers import AutoImageProcessor

    e = get_extractor("dinov2", model=tiny, size=518)
    t = e.transform(astronaut.crop((0, 0, 512, 301)))
    assert t.shape == (3, 518, 518)
    proc = AutoImageProcessor.from_pretrained(tiny)
    ref = proc(images=astronaut.crop((0, 0, 512, 301)), size={"shortest_edge": 592},
               crop_size={"height": 518, "width": 518}, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(t, ref, atol=1e-6)
    assert get_extractor("dinov2", model=tiny, size=None).transform(astronaut).shape == (3, 224, 224)
    assert e.key() != get_extractor("dinov2", model=tiny).key()
    with pytest.raises(ValueError, match="size"):
        get_extractor("dinov2", size="big")

def test_outputs_cls_and_mean_patch(ex, tiny, astronaut):
    from transformers import AutoModel

    x = torch.stack([ex.transform(im) for im in images(astronaut, 2)])
    out = ex.compute(x, items(2))
    assert out.shape == (2, 64) and out.dtype == np.float32
    ref = AutoModel.from_pretrained(tiny).eval()
    with torch.no_grad():
        o = ref(pixel_values=x)
    np.testing.assert_allclose(out[:, :32], o.pooler_output.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 32:], o.last_hidden_state[:, 1:].mean(1).numpy(), atol=1e-5)
    names = ex.feature_names(64)
    assert names[0] == "dinov2_cls_0" and names[32] == "dinov2_patch_0"
    assert get_extractor("dinov2").output_dim() == 1536
    assert get_extractor("dinov2", model="facebook/dinov2-with-registers-large").output_dim() == 2048

def test_518_input_runs(tiny, astronaut):
    e = get_extractor("dinov2", model=tiny, size=518)
    e.setup()
    assert e.compute(e.transform(astronaut)[None], items(1)).shape == (1, 64)

def test_deterministic_and_batch_invariant(ex, astronaut):
    x = torch.stack([ex.transform(im) for im in images(astronaut)])
    batch = ex.compute(x, items(8))
    np.testing.assert_array_equal(batch, ex.compute(x, items(8)))
    single = np.concatenate([ex.compute(x[i:i + 1], items(1)) for i in range(8)])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert not np.allclose(batch[0], batch[1])

def test_identity(ex):
    ident = ex.identity()
    assert ident["image_size"] == 224 and ident["options"]["revision"] is None
    assert {"transformers", "torch"} <= set(ident["libraries"])

def test_missing_weights_offline_are_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="facebook/dinov2-base"):
        get_extractor("dinov2").setup()
    with pytest.raises(WeightsNotFoundError, match="facebook/dinov2-large@v9"):
        get_extractor("dinov2", model="facebook/dinov2-large", revision="v9").transform(None)
