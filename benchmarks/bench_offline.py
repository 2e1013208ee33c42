"""Throughput of the offline extractors and of video decoding, with ratios measured in one run.

    .venv/bin/python benchmarks/bench_offline.py [--images 16] [--repeats 3] [--threads N]

Prints, for 512x512 PNG images (built from skimage samples, written to a temp folder):
  decode alone (extractors.media.load_image), nss (decode included), effnet_lite0
  (decode + transform + batched forward, CPU fp32), and nss (its BRISQUE part, and all
  49 values) against the `brisque` package's 36 features on the same images (goal:
  nss >= 3x the reference). The package's `score()` is not timed: with numpy 2.4 it
  raises TypeError (float() of a 1-element array); its features, timed here, are the
  costly part of it anyway (the SVR is one dot product);
and for video: PyAV frames/s on the FETV GIFs (../shared/data/fetv/videos, when present)
and on a 512x512 H.264 mp4 written here, plus uniform 8-frame sampling against decoding
every frame and then picking (what the first read_video_frames did).

Each measure is repeated (interleaved) and the median taken, so a busy machine moves
all of them alike; the ratios are the numbers to quote. Both wall time (what a user
waits) and process CPU time (all threads; steadier on a shared, oversubscribed machine)
are reported. On such a machine torch's 2 intra-op threads spin against other
processes: compare ``--threads 1``.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
import _results  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)


def make_images(folder: Path, n: int) -> list[str]:
    import cv2
    import skimage.data
    from PIL import Image

    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
               skimage.data.rocket(), skimage.data.immunohistochemistry()]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = min(h, w)
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        img = cv2.resize(src[y : y + side, x : x + side], (512, 512), interpolation=cv2.INTER_CUBIC)
        if i % 2:
            img = img[:, ::-1]
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(p)
        paths.append(str(p))
    return paths


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads). On a shared, oversubscribed
    machine the CPU time is the steadier measure of work; wall time is what a user waits."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def bench_images(paths: list[str], repeats: int) -> dict[str, float]:
    import skimage.color
    import torch
    from PIL import Image

    from extractors.base import Item
    from extractors.effnet_lite0 import EffNetLite0
    from extractors.media import load_image
    from extractors.nss import NSS, brisque_features, luma

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brisque import BRISQUE

        ref = BRISQUE(url=False)
    import cv2

    nss = NSS()
    nss.setup()
    eff = EffNetLite0()
    eff.setup("cpu", "fp32")
    items = [Item(i, str(i), p) for i, p in enumerate(paths)]
    arrays = [np.asarray(load_image(p)) for p in paths]

    def ref_features(rgb):
        g = skimage.color.rgb2gray(rgb)
        ref.calculate_brisque_features(g, 7, 7 / 6)
        ref.calculate_brisque_features(cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC), 7, 7 / 6)

    def effnet_run():
        for start in range(0, len(items), 16):
            chunk = items[start : start + 16]
            eff.compute(eff.collate([eff.prepare(it) for it in chunk]), chunk)

    tasks = {
        "decode": lambda: [load_image(p) for p in paths],
        "nss (decode incl.)": lambda: [nss.prepare(it) for it in items],
        "nss brisque part": lambda: [brisque_features(luma(a) / 255.0) for a in arrays],
        "nss all 49": lambda: [nss.transform(Image.fromarray(a)) for a in arrays],
        "brisque pkg features": lambda: [ref_features(a) for a in arrays],
        "effnet_lite0 (decode incl., batch 16)": effnet_run,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in tasks.values():  # warm-up (imports, oneDNN primitives, caches)
            fn()
        times = {k: [] for k in tasks}
        for _ in range(repeats):
            for k, fn in tasks.items():
                times[k].append(timed(fn))
    out = {}
    for k, v in times.items():
        wall, cpu = medians(v)
        out[k] = (len(paths) / wall, 1e3 * cpu / len(paths))
    return out | {"_torch_threads": torch.get_num_threads()}


def write_mp4_512(path: Path, n: int = 64) -> Path:
    import video_fixtures as vf

    return vf.write_mp4(path, vf.moving_frames(n, (512, 512), step=(3, 1), seed=0), fps=24)


def bench_video(mp4: Path, gifs: list[str], repeats: int) -> dict[str, float]:
    import av

    from extractors.media import read_video_frames, uniform_indices

    def decode_all_naive(p):  # the first version: every frame converted and kept, then picked
        with av.open(p) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return [frames[i] for i in uniform_indices(len(frames), 8)]

    def count(paths):
        return sum(len(read_video_frames(p, sampling="all")) for p in paths)

    out = {}
    sets = {"mp4 512x512": [str(mp4)] * 4}
    if gifs:
        sets["FETV GIFs"] = gifs
    for name, paths in sets.items():
        n_frames = count(paths)
        tasks = {
            "all frames": lambda: [read_video_frames(p, sampling="all") for p in paths],
            "uniform 8": lambda: [read_video_frames(p, 8) for p in paths],
            "uniform 8, naive": lambda: [decode_all_naive(p) for p in paths],
        }
        times = {k: [] for k in tasks}
        for _ in range(repeats):
            for k, fn in tasks.items():
                times[k].append(timed(fn))
        med = {k: medians(v) for k, v in times.items()}
        unit = lambda k, n: (n / med[k][0], 1e3 * med[k][1] / n)  # noqa: E731  (per s, CPU ms each)
        label = f"{name}: decode frames/s (all frames, {n_frames} frames in {len(paths)} files)"
        out[label] = unit("all frames", n_frames)
        out[f"{name}: videos/s uniform 8"] = unit("uniform 8", len(paths))
        out[f"{name}: videos/s uniform 8, naive decode-all-then-pick"] = unit("uniform 8, naive", len(paths))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--skip-video", action="store_true")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp, args.images)
        r = bench_images(paths, args.repeats)
        threads = r.pop("_torch_threads")
        print(f"\n== images: {len(paths)} x 512x512 PNG, median of {args.repeats}, torch threads {threads}")
        rows = []
        for k, (ips, cpu) in r.items():
            print(f"  {k:42s} {ips:8.1f} images/s   {cpu:8.1f} CPU ms/image")
            rows.append({"measure": f"{k}, 512x512 PNG", "items/s": round(ips, 2), "CPU ms/item": round(cpu, 2)})
        summary = {"torch threads": threads, "images": len(paths), "median of": args.repeats}
        print("  ratios (same run; by wall time, and by CPU time):")
        for a, b, note in [("nss brisque part", "brisque pkg features", ""),
                           ("nss all 49", "brisque pkg features", "   (goal >= 3x)"),
                           ("nss (decode incl.)", "decode", "   (share of decode speed)")]:
            print(f"    {a} / {b}: {r[a][0] / r[b][0]:.2f}x wall, {r[b][1] / r[a][1]:.2f}x CPU{note}")
            summary[f"{a} / {b}{note.strip() and ' ' + note.strip()}"] = \
                f"{r[a][0] / r[b][0]:.2f}x wall, {r[b][1] / r[a][1]:.2f}x CPU"
        if not args.skip_video:
            mp4 = write_mp4_512(tmp / "clip512.mp4")
            gifs = sorted(glob.glob(str(REPO.parent / "shared" / "data" / "fetv" / "videos" / "*" / "*.gif")))
            v = bench_video(mp4, gifs, args.repeats)
            print(f"\n== video (PyAV, thread_type AUTO), median of {args.repeats}"
                  + ("" if gifs else "  [FETV GIFs absent: ../shared/data]"))
            for k, (val, cpu) in v.items():
                print(f"  {k:78s} {val:8.1f}   ({cpu:.2f} CPU ms each)")
                rows.append({"measure": f"PyAV {k}", "items/s": round(val, 2), "CPU ms/item": round(cpu, 2)})
            for name in ("mp4 512x512", "FETV GIFs"):
                a = v.get(f"{name}: videos/s uniform 8")
                b = v.get(f"{name}: videos/s uniform 8, naive decode-all-then-pick")
                if a and b:
                    print(f"  ratio {name}: uniform 8 vs naive: {a[0] / b[0]:.2f}x wall, {b[1] / a[1]:.2f}x CPU")
                    summary[f"{name}: uniform 8 / decode all then pick"] = f"{a[0] / b[0]:.2f}x wall, {b[1] / a[1]:.2f}x CPU"
        _results.write("offline", rows, summary)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
