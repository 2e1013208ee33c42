"""Re-IQA: loading the authors' checkpoint layout, the demos' two-scale input, batching.

No real weights here: random ResNet-50 checkpoints in the released layout
(``{'opt': Namespace, 'model': {'module.encoder.*', 'module.head.*'}}``) are written to a
temporary folder and loaded through the extractor's real path. The reference is the
demo scripts' own procedure, rebuilt in ``demo_features`` below.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from extractors.base import Item, ItemError, WeightsNotFoundError
from extractors.registry import get_extractor
from tiny_models import reiqa_random_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("reiqa")
    content = reiqa_random_checkpoint(d / "content_aware_r50.pth", seed=1)
    quality = reiqa_random_checkpoint(d / "quality_aware_r50.pth", seed=2)
    return {"content_ckpt": str(content), "quality_ckpt": str(quality), "dir": d}


@pytest.fixture(scope="module")
def extractor(ckpts):
    torch.set_num_threads(2)
    ex = get_extractor("reiqa", content_ckpt=ckpts["content_ckpt"], quality_ckpt=ckpts["quality_ckpt"])
    ex.setup("cpu", "fp32")
    return ex


def _image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BILINEAR)


def _items(tmp_path, n, size=(40, 32)):
    items = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        _image(i, size).save(p)
        items.append(Item(index=i, item_id=f"i{i}", path=str(p), prompt="unused"))
    return items


@functools.lru_cache(maxsize=2)
def demo_model(ckpt_path: str):
    """The demos' model: DataParallel(RGBSingleHead) loaded from checkpoint['model']."""
    import torchvision

    class SingleHead(torch.nn.Module):  # PyContrast RGBSingleHead: encoder + linear head
        def __init__(self):
            super().__init__()
            self.encoder = torchvision.models.resnet50(weights=None)
            self.encoder.fc = torch.nn.Identity()
            self.head = torch.nn.Sequential(torch.nn.Linear(2048, 128))

    model = torch.nn.DataParallel(SingleHead())
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def demo_features(ckpt_path: str, image: Image.Image, normalise: bool) -> np.ndarray:
    """What demo_{content,quality}_aware_feats.py compute, rebuilt from their code."""
    model = demo_model(ckpt_path)
    image = image.convert("RGB")
    image2 = image.resize((image.size[0] // 2, image.size[1] // 2))  # Pillow default filter
    img1, img2 = transforms.ToTensor()(image), transforms.ToTensor()(image2)
    if normalise:
        norm = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        img1, img2 = norm(img1), norm(img2)
    with torch.no_grad():
        f1 = model.module.encoder(img1.unsqueeze(0))
        f2 = model.module.encoder(img2.unsqueeze(0))
    return torch.cat((f1, f2), dim=1).numpy()[0]


@pytest.mark.parametrize("size", [(48, 40), (37, 29)])
def test_transform_is_the_demos_two_scales(size):
    ex = get_extractor("reiqa")
    im = _image(3, size)
    packed = ex.transform(im)
    w, h = size
    assert packed.shape == (3, h + h // 2, w)
    assert torch.equal(packed[:, :h], transforms.ToTensor()(im))
    assert torch.equal(packed[:, h:, : w // 2], transforms.ToTensor()(im.resize((w // 2, h // 2))))
    assert torch.count_nonzero(packed[:, h:, w // 2 :]) == 0


def test_matches_demo_pipeline(extractor, ckpts, tmp_path):
    items = _items(tmp_path, 2, size=(45, 38))
    batch = extractor.collate([extractor.prepare(it) for it in items])
    out = extractor.compute(batch, items)
    assert out.shape == (2, 8192) and out.dtype == np.float32
    for row, it in zip(out, items):
        im = Image.open(it.path)
        ref = np.concatenate(
            [demo_features(ckpts["content_ckpt"], im, True), demo_features(ckpts["quality_ckpt"], im, False)]
        )
        np.testing.assert_allclose(row, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # content and quality encoders really differ (weights not swapped or shared)
    assert not np.allclose(out[:, :4096], out[:, 4096:])


@pytest.mark.parametrize("n", [3, pytest.param(8, marks=pytest.mark.slow)])  # 8 x 4 ResNet-50 passes
def test_shapes_determinism_and_batch_invariance(extractor, tmp_path, n):
    items = _items(tmp_path, n)
    prepared = [extractor.prepare(it) for it in items]
    batched = extractor.compute(extractor.collate(prepared), items)
    again = extractor.compute(extractor.collate(prepared[:2]), items[:2])
    singles = np.concatenate([extractor.compute(extractor.collate([p]), [it]) for p, it in zip(prepared, items)])
    assert batched.shape == (n, extractor.output_dim()) == (n, 8192)
    assert np.isfinite(batched).all()
    np.testing.assert_array_equal(batched[:2], again)
    np.testing.assert_allclose(batched, singles, rtol=1e-4, atol=1e-4 * np.abs(singles).max())
    assert len(extractor.feature_names(8192)) == 8192


def test_mixed_sizes_are_grouped(extractor, tmp_path):
    items = _items(tmp_path, 2) + [
        Item(index=2, item_id="odd", path=str(tmp_path / "odd.png"), prompt="")
    ]
    _image(9, (33, 27)).save(tmp_path / "odd.png")
    prepared = [extractor.prepare(it) for it in items]
    batch = extractor.collate(prepared)
    assert isinstance(batch, list)  # different sizes cannot be stacked
    out = extractor.compute(batch, items)
    odd = extractor.compute(extractor.collate(prepared[2:]), items[2:])
    same = extractor.compute(extractor.collate(prepared[:2]), items[:2])
    singles = np.concatenate([same, odd])
    np.testing.assert_allclose(out, singles, rtol=1e-4, atol=1e-4 * np.abs(singles).max())


def test_max_side_downscales(tmp_path):
    ex = get_extractor("reiqa", max_side=32)
    packed = ex.transform(_image(1, (64, 48)))
    assert packed.shape == (3, 24 + 12, 32)
    assert ex.key() != get_extractor("reiqa").key()


def test_quality_only(ckpts, tmp_path):
    ex = get_extractor("reiqa", encoders=["quality"], quality_ckpt=ckpts["quality_ckpt"])
    ex.setup("cpu", "fp32")  # the content checkpoint is not needed
    items = _items(tmp_path, 1)
    out = ex.compute(ex.collate([ex.prepare(items[0])]), items)
    assert out.shape == (1, 4096) == (1, ex.output_dim())
    ref = demo_features(ckpts["quality_ckpt"], Image.open(items[0].path), False)
    np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"content_aware_r50\.pth.*content_ckpt"):
        get_extractor("reiqa").setup("cpu", "fp32")
    missing = tmp_path / "nope" / "quality_aware_r50.pth"
    with pytest.raises(WeightsNotFoundError, match="nope/quality_aware_r50.pth does not exist"):
        get_extractor("reiqa", encoders=["quality"], quality_ckpt=str(missing)).setup("cpu", "fp32")


def test_directory_option_finds_the_released_file_name(ckpts):
    ex = get_extractor("reiqa", content_ckpt=str(ckpts["dir"]), quality_ckpt=str(ckpts["dir"]))
    assert ex.checkpoint_path("content").endswith("content_aware_r50.pth")
    assert ex.checkpoint_path("quality").endswith("quality_aware_r50.pth")


def test_wrong_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"module.backbone.conv1.weight": torch.zeros(1)}}, bad)
    ex = get_extractor("reiqa", encoders=["content"], content_ckpt=str(bad))
    with pytest.raises(ValueError, match="no 'encoder"):
        ex.setup("cpu", "fp32")


def test_checkpoint_of_another_architecture_lists_the_keys_that_do_not_fit():
    from extractors.weights import load_state_exactly

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    state = {**{f"extra.{i}": torch.zeros(1) for i in range(9)}, "0.weight": torch.zeros(2, 2)}
    expected = r"^toy.pt: Linear: missing \['0.bias'\]; unexpected \['extra.0', .*'extra.5'\]\.\.\.$"
    with pytest.raises(ValueError, match=expected):
        load_state_exactly(net, state, "toy.pt: Linear")
    good = {"0.weight": torch.ones(2, 2), "0.bias": torch.zeros(2)}
    assert load_state_exactly(net, good, "toy.pt") is net and float(net[0].weight.detach().sum()) == 4.0


def test_bad_options_and_tiny_image():
    with pytest.raises(ValueError, match="encoders"):
        get_extractor("reiqa", encoders=["style"])
    with pytest.raises(ItemError, match="too small"):
        get_extractor("reiqa").transform(Image.new("RGB", (1, 5)))


def test_identity_names_checkpoints(ckpts):
    ex = get_extractor("reiqa", content_ckpt=ckpts["content_ckpt"], quality_ckpt=ckpts["quality_ckpt"])
    ident = ex.identity()
    # by content (name and sha256), never by path: a copy elsewhere gives the same key; allow_pickle changes no number
    assert ident["options"]["content_ckpt"]["file"] == "content_aware_r50.pth"
    assert len(ident["options"]["quality_ckpt"]["sha256"]) == 64 and "allow_pickle" not in ident["options"]
    assert "torchvision" in ident["libraries"]
