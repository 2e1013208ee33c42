"""Throughput of the frozen image-model extractors, real-size architectures, random weights.

Speed does not depend on weight values, so each model is built from its real
configuration with random initialisation (nothing downloaded) and installed into the
extractor with ``_attach`` (the same hook ``setup`` uses after loading weights).

Two numbers per extractor, measured in the same run:

* ``bare``: ``compute`` on a ready batch of random pixels (forward pass only, prompts
  included for the models that read them);
* ``full``: decode PNG files + ``transform`` + collate + ``compute`` in one process
  (no DataLoader workers, so it is the serial cost of one item end to end).

    python benchmarks/bench_image_models.py                       # CPU, fp32, all models
    python benchmarks/bench_image_models.py --device cuda --precision bf16 --batch 32 --batches 10
    python benchmarks/bench_image_models.py --only clip,dinov2

To add a model: write ``build_<name>(device, precision) -> extractor`` and add it to
``MODELS`` with its default CPU batch size.
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tiny_models: offline tokenizer files
import _results  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)


# ------------------------------------------------------------------ builders
def build_clip(device: str, precision: str):
    """open_clip ViT-L-14 (image 304 M + text 123 M parameters), random weights."""
    import open_clip

    from extractors.registry import get_extractor

    ex = get_extractor("clip", model="ViT-L-14", pretrained="openai")
    ex.device, ex.precision = device, precision
    model = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    ex._attach(model, open_clip.get_tokenizer("ViT-L-14"))
    return ex


def build_dinov2(device: str, precision: str):
    """facebook/dinov2-base architecture (86 M), random weights, the base processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    from extractors.registry import get_extractor
    from tiny_models import DINOV2_PROCESSOR

    ex = get_extractor("dinov2", model="facebook/dinov2-base")
    ex.device, ex.precision = device, precision
    cfg = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14, image_size=518)
    ex._attach(Dinov2Model(cfg), BitImageProcessor(**DINOV2_PROCESSOR))
    return ex


def build_blip2(device: str, precision: str):
    """Salesforce/blip2-itm-vit-g architecture: EVA ViT-g (1.0 B) + Q-Former, random weights."""
    from transformers import AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval

    from extractors.registry import get_extractor
    from tiny_models import blip2_image_processor, bert_tokenizer_dir

    ex = get_extractor("blip2")
    ex.device, ex.precision = device, precision
    cfg = Blip2Config(qformer_config={"use_qformer_text_input": True}, num_query_tokens=32)
    model = Blip2ForImageTextRetrieval(cfg)
    tok = AutoTokenizer.from_pretrained(str(bert_tokenizer_dir(tempfile.mkdtemp())))
    ex._attach(model, blip2_image_processor(), tok)
    return ex


def build_imagereward(device: str, precision: str):
    """ImageReward: BLIP ViT-L/16 (303 M) + BERT-base with cross-attention + MLP head, random weights."""
    from tiny_models import imagereward_fullsize_random

    ex = imagereward_fullsize_random(device, precision)
    ex._model = ex.net  # counted by bench_one
    return ex


def build_reiqa(device: str, precision: str):
    """Re-IQA: content + quality ResNet-50s (2 x 25.6 M), random weights saved in the released
    checkpoint layout and loaded through setup(); inputs at native size + half scale."""
    import torch

    from tiny_models import reiqa_fullsize_random

    with tempfile.TemporaryDirectory() as tmp:
        ex = reiqa_fullsize_random(tmp, device, precision)
    ex._model = torch.nn.ModuleDict(ex.nets)  # counted by bench_one
    return ex


#: name -> (builder, default batch size on CPU)
MODELS = {
    "clip": (build_clip, 4),
    "dinov2": (build_dinov2, 8),
    "blip2": (build_blip2, 2),
    "imagereward": (build_imagereward, 2),
    "reiqa": (build_reiqa, 2),
}


# ------------------------------------------------------------------- timing
def sample_images(folder: Path, n: int) -> list[str]:
    """n PNGs at AIGIQA-20K-like sizes (512 to 1024 px), from a real photo."""
    from PIL import Image
    from skimage import data

    base = Image.fromarray(data.astronaut())
    sizes = [(512, 512), (1024, 1024), (768, 512), (512, 768)]
    paths = []
    for i in range(n):
        p = folder / f"img_{i}.png"
        base.rotate(7 * i).resize(sizes[i % len(sizes)]).save(p)
        paths.append(str(p))
    return paths


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench_one(name: str, device: str, precision: str, batch: int, batches: int, paths: list[str]) -> dict:
    import torch

    from extractors.base import Item
    from extractors.media import load_image

    builder, _ = MODELS[name]
    t0 = time.perf_counter()
    ex = builder(device, precision)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in ex._model.parameters()) / 1e6
    n = batch * batches
    items = [Item(i, f"img_{i}", paths[i % len(paths)], f"a photo of object number {i} on a table") for i in range(n)]

    shape = ex.transform(load_image(paths[0])).shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=g)
    ex.compute(x, items[:batch])  # warm-up (allocations, kernels, caches)
    _sync(device)

    if hasattr(ex, "_text_cache"):
        ex._text_cache.clear()
    t0 = time.perf_counter()
    for b in range(batches):
        ex.compute(x, items[b * batch:(b + 1) * batch])
    _sync(device)
    bare = n / (time.perf_counter() - t0)

    if hasattr(ex, "_text_cache"):
        ex._text_cache.clear()
    t0 = time.perf_counter()
    for b in range(batches):
        chunk = items[b * batch:(b + 1) * batch]
        ex.compute(ex.collate([ex.prepare(it) for it in chunk]), chunk)
    _sync(device)
    full = n / (time.perf_counter() - t0)

    del ex
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"name": name, "params_M": params, "input": "x".join(map(str, shape)), "batch": batch,
            "batches": batches, "precision": precision, "build_s": build_s, "bare": bare, "full": full}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: per model, small for CPU)")
    ap.add_argument("--batches", type=int, default=2, help="timed batches per mode (after one warm-up batch)")
    ap.add_argument("--only", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# device: {dev}; torch {torch.__version__}; precision {args.precision}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = sample_images(Path(tmp), 16)
        for name in names:
            batch = args.batch or MODELS[name][1]
            r = bench_one(name, args.device, args.precision, batch, args.batches, paths)
            rows.append(r)
            print(f"  done {name}: bare {r['bare']:.2f} items/s, full {r['full']:.2f} items/s", flush=True)
    print()
    print("| extractor | params (M) | input | batch | batches | precision | bare forward (items/s) "
          "| with decoding (items/s) | full / bare |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params_M']:.0f} | {r['input']} | {r['batch']} | {r['batches']} | {r['precision']} "
              f"| {r['bare']:.2f} | {r['full']:.2f} | {r['full'] / r['bare']:.2f} |")
    _results.write(f"image_models-{args.device.split(':')[0]}", [
        {"extractor": r["name"], "params (M)": round(r["params_M"]), "input": r["input"], "batch": r["batch"],
         "precision": r["precision"], "bare forward items/s": round(r["bare"], 3),
         "with decoding items/s": round(r["full"], 3), "with decoding / bare": round(r["full"] / r["bare"], 2)}
        for r in rows], {"device": dev, "torch": torch.__version__, "timed batches": args.batches,
                         "weights": "random, real-size architectures (speed does not depend on weight values)"})


if __name__ == "__main__":
    main()
