"""ImageReward (Xu et al., NeurIPS 2023) rebuilt on transformers' BLIP classes.

The reference (``image-reward`` 1.5, ``ImageReward/ImageReward.py`` and
``models/BLIP/{blip_pretrain,vit,med}.py``) is:

* ``blip.visual_encoder``: BLIP's timm-style ViT (ViT-L/16 at 224 for ImageReward:
  width 1024, depth 24, 16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, exact GELU,
  final LayerNorm). transformers' ``BlipVisionModel`` is the same network (fused ``qkv``,
  pre-norm blocks, ``post_layernorm``); only the parameter names differ.
* ``blip.text_encoder``: ``med.py`` BertModel without pooler, every layer with
  cross-attention to the image tokens (keys/values from the ViT width), configured by
  ``med_config.json``. transformers' ``BlipTextModel`` is a port of the same file with the
  same parameter names; cross-attention layers exist when ``is_decoder=True`` and are
  used whenever ``encoder_hidden_states`` is given, while ``is_decoder=False`` at call
  time keeps the self-attention bidirectional, as ``mode='multimodal'`` does.
* the prompt is tokenised with bert-base-uncased (+ ``[DEC]``, ``[ENC]`` special tokens),
  ``padding='max_length', truncation=True, max_length=35``; the [CLS] token is kept
  (ImageReward does not swap in ``[ENC]``) and all image tokens are attended.
* the first token's final hidden state (768-d) goes through ``MLP``: Linear 768->1024,
  Dropout, ->128, Dropout, ->64, Dropout, ->16, ->1, with NO activations (the ReLUs are
  commented out in the reference), in fp32 (``.float()``); then
  ``(reward - 0.16717362830052426) / 1.0333394966054072``.

The ``ImageReward.pt`` state dict keys ``blip.visual_encoder.*``, ``blip.text_encoder.*``
and ``mlp.layers.*`` are renamed onto these modules by :func:`convert_state_dict`;
``blip.vision_proj`` / ``blip.text_proj`` (unused by the reward) are dropped.
"""
from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from .weights import load_state_exactly

log = logging.getLogger(__name__)

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35
# create_vit() in BLIP's blip.py; ImageReward uses 'large'
VIT_PRESETS = {
    "large": {"width": 1024, "depth": 24, "heads": 16},
    "base": {"width": 768, "depth": 12, "heads": 12},
}
VIT_FIXED = {"patch": 16, "mlp_ratio": 4.0, "layer_norm_eps": 1e-6}
# keys of ImageReward.pt that the reward does not use
IGNORED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")
_VIT_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def vit_sizes(vit: Any) -> dict:
    """'large' / 'base' or a dict {width, depth, heads} (tests use tiny ones)."""
    if isinstance(vit, str):
        if vit not in VIT_PRESETS:
            raise ValueError(f"vit must be one of {sorted(VIT_PRESETS)} or a dict of width/depth/heads, got {vit!r}")
        return dict(VIT_PRESETS[vit])
    if isinstance(vit, dict) and {"width", "depth", "heads"} <= set(vit):
        return {k: int(vit[k]) for k in ("width", "depth", "heads")}
    raise ValueError(f"vit must be 'large', 'base' or a dict with width, depth, heads; got {vit!r}")


def read_med_config(path: str) -> dict:
    """The BERT settings of med_config.json, with transformers.BertConfig's defaults."""
    with open(path, encoding="utf-8") as f:
        med = json.load(f)
    if not med.get("add_cross_attention", False):
        raise ValueError(f"{path}: add_cross_attention is not true; ImageReward's text encoder needs cross-attention")
    defaults = {
        "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "pad_token_id": 0,
    }
    return {k: med.get(k, v) for k, v in defaults.items()}


def convert_state_dict(state: dict) -> tuple[dict, list[str]]:
    """ImageReward.pt names -> ImageRewardNet names. Returns (converted, ignored keys)."""
    out, ignored = {}, []
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        if key.startswith("blip.visual_encoder."):
            k = key[len("blip.visual_encoder."):]
            m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", k)
            if m and m.group(2) in _VIT_BLOCK:
                out[f"vision.encoder.layers.{m.group(1)}.{_VIT_BLOCK[m.group(2)]}.{m.group(3)}"] = value
            elif k == "cls_token":
                out["vision.embeddings.class_embedding"] = value
            elif k == "pos_embed":
                out["vision.embeddings.position_embedding"] = value
            elif k.startswith("patch_embed.proj."):
                out["vision.embeddings.patch_embedding." + k.rsplit(".", 1)[1]] = value
            elif k.startswith("norm."):
                out["vision.post_layernorm." + k.rsplit(".", 1)[1]] = value
            else:
                ignored.append(key)
        elif key.startswith("blip.text_encoder."):
            out["text." + key[len("blip.text_encoder."):]] = value
        elif key.startswith("mlp.layers."):
            out["mlp." + key[len("mlp."):]] = value
        else:
            ignored.append(key)
    return out, ignored


def build_net(med: dict, vit: dict, image_size: int):
    """An ImageRewardNet with the given sizes (random weights until loaded)."""
    import torch
    from torch import nn
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    vcfg = BlipVisionConfig(
        hidden_size=vit["width"],
        intermediate_size=int(vit["width"] * VIT_FIXED["mlp_ratio"]),
        num_hidden_layers=vit["depth"],
        num_attention_heads=vit["heads"],
        image_size=image_size,
        patch_size=VIT_FIXED["patch"],
        hidden_act="gelu",
        layer_norm_eps=VIT_FIXED["layer_norm_eps"],
        attention_dropout=0.0,
    )
    tcfg = BlipTextConfig(
        vocab_size=med["vocab_size"],
        hidden_size=med["hidden_size"],
        encoder_hidden_size=vit["width"],
        intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med["hidden_act"],
        layer_norm_eps=med["layer_norm_eps"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=med["pad_token_id"],
        is_decoder=True,  # builds the cross-attention layers
        use_cache=False,
    )
    for cfg in (vcfg, tcfg):
        cfg._attn_implementation = "eager"  # BLIP text attention is hand-written; masks must be additive

    class RewardHead(nn.Module):
        """ImageReward's MLP: no activations between the linears (as released)."""

        def __init__(self, width: int):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
            )

        def forward(self, x):
            return self.layers(x)

    class ImageRewardNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = BlipVisionModel(vcfg)
            self.text = BlipTextModel(tcfg, add_pooling_layer=False)
            self.mlp = RewardHead(med["hidden_size"])

        def forward(self, pixels, input_ids, attention_mask):
            """-> (normalised reward [B] fp32, first-token embedding [B, H] fp32)."""
            image_embeds = self.vision(pixel_values=pixels).last_hidden_state
            text = self.text(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,  # all image tokens attended (image_atts = ones)
                is_decoder=False,
            ).last_hidden_state
            emb = text[:, 0, :].float()
            device_type = emb.device.type
            with torch.autocast(device_type=device_type, enabled=False):  # head in fp32, as `.float()` does
                reward = self.mlp(emb).squeeze(-1)
            return (reward - REWARD_MEAN) / REWARD_STD, emb

    return ImageRewardNet()


def load_net(checkpoint: str, med_config: str, vit: Any):
    """Build from med_config.json + vit sizes and load ImageReward.pt strictly."""
    import torch

    med = read_med_config(med_config)
    sizes = vit_sizes(vit)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if "blip.visual_encoder.pos_embed" not in state:
        raise ValueError(f"{checkpoint}: no 'blip.visual_encoder.pos_embed'; not an ImageReward checkpoint?")
    width = state["blip.visual_encoder.cls_token"].shape[-1]
    if width != sizes["width"]:
        raise ValueError(f"{checkpoint}: ViT width is {width} but vit={vit!r} says {sizes['width']}")
    n_pos = state["blip.visual_encoder.pos_embed"].shape[1] - 1
    patch = state["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos or patch != VIT_FIXED["patch"]:
        raise ValueError(f"{checkpoint}: unexpected position grid ({n_pos} patches) or patch size {patch}")
    image_size = grid * patch  # 224 for ImageReward
    net = build_net(med, sizes, image_size)
    converted, ignored = convert_state_dict(state)
    load_state_exactly(net, converted, f"{checkpoint} does not fit ImageReward with vit={vit!r} and {med_config}")
    unknown = [k for k in ignored if not k.startswith(IGNORED_PREFIXES)]
    if unknown:
        log.warning("ImageReward checkpoint %s: ignored unknown keys %s", checkpoint, unknown[:10])
    return net.eval(), image_size


def make_tokenizer(vocab_file: str):
    """bert-base-uncased tokenizer as BLIP's init_tokenizer() makes it."""
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab=vocab_file, do_lower_case=True)
    expected = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    got = {t: tok.convert_tokens_to_ids(t) for t in expected}
    if got != expected or len(tok) != 30522:
        raise ValueError(f"{vocab_file} is not bert-base-uncased's vocabulary (size {len(tok)}, special ids {got})")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok
