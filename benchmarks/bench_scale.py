"""Scale-out numbers for docs/scale.md, measured in one run on this machine (CPU only).

1. ``engine``: the Ray feature engine against the local runner on the same CPU work (the ``nss``
   extractor over the embedded demo images), interleaved: local, Ray with 1 actor, Ray with one
   actor per CPU, repeated. End-to-end wall time (Ray start, actor start and the merge included)
   and the steady-state rate inside the workers; ratio = Ray items/s over local items/s.
2. ``merge``: ``features_store.merge`` of 10 and 100 shard stores that together hold
   ``--rows`` x ``--dim`` synthetic rows, into a store that already holds the manifest (as the
   Ray engine does).
3. ``fit``: ``fit_stack`` (tune on a capped subset, refit every head on all rows) at 14,000,
   50,000 and 100,000 synthetic rows x 1,536 dims, each in a fresh process (peak RSS of that
   process), with a small budget: tuned heads enet, lgbm, knn, 2 trials each, per-block enet
   heads, 1 worker. SVR (O(n^2) kernel) is timed alone at 3,500 / 7,000 / 14,000 rows to give its
   growth exponent, since a 100,000-row SVR fit does not fit in this session.

    .venv/bin/python benchmarks/bench_scale.py [--only engine|merge|fit] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------ 1. engine
def _extract(data: Path, store: Path, engine: list[str]) -> tuple[float, str]:
    from extractors.__main__ import main as ex_main

    if store.exists():
        shutil.rmtree(f"{store}.journal", ignore_errors=True)
        store.unlink()
    argv = ["run", "--track", "image", "--data", str(data), "--extractors", "nss", "--store", str(store),
            "--batch-size", "8", "--workers", "0", "--threads", "1", "--no-progress", *engine]
    import contextlib
    import io

    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = ex_main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"extraction failed ({rc}): {buf.getvalue()}")
    return wall, buf.getvalue()


def bench_engine(args) -> dict:
    from experiments.demo_data import DemoConfig, build_demo_dataset

    tmp = Path(args.tmp) / "engine"
    data = build_demo_dataset(tmp / "data", DemoConfig(n_sources=16, crops_per_source=args.crops, size=args.size))
    from features_store import load_dataset

    n = len(load_dataset(data).df)
    cpus = os.cpu_count() or 1
    runs: dict[str, list[float]] = {"local": [], "ray_1_actor": [], f"ray_{cpus}_actors": []}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(args.repeat):
        for name in runs:
            engine = [] if name == "local" else ["--engine", "ray", "--actors", name.split("_")[1]]
            wall, out = _extract(data, tmp / f"{name}.h5", engine)
            runs[name].append(wall)
            # the runner's own rate: "<r> items/s" (local) or "<r> items/s per worker" (ray)
            rate = float(out.split(" items/s")[0].rsplit(" ", 1)[-1])
            rates[name].append(rate)
            print(f"engine rep {rep}: {name}: {wall:.1f} s for {n} items ({n / wall:.2f} items/s end to end, "
                  f"{rate:.2f} items/s per worker); load {load_avg()}", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    res = {"items": n, "image_px": args.size, "extractor": "nss", "cpus": cpus, "median_wall_s": med,
           "median_rate_per_worker": {k: statistics.median(v) for k, v in rates.items()},
           "ratio_end_to_end": {k: med["local"] / v for k, v in med.items() if k != "local"},
           "ratio_per_worker_rate": {k: statistics.median(rates[k]) / statistics.median(rates["local"])
                                     for k in runs if k != "local"},
           "load_avg_end": load_avg()}
    print(json.dumps({"engine": res}, indent=1), flush=True)
    return res


# ------------------------------------------------------------------ 2. merge
def _manifest(n: int):
    import pandas as pd

    from features_store.manifest import Manifest

    df = pd.DataFrame({"item_id": [f"img_{i:07d}.png" for i in range(n)],
                       "path": [f"images/img_{i:07d}.png" for i in range(n)],
                       "prompt": [f"prompt {i // 4}" for i in range(n)], "generator": [f"gen{i % 7}" for i in range(n)],
                       "mos": np.random.default_rng(0).normal(3, 1, n), "split": "train"})
    df["group"] = df["prompt"]
    return Manifest(df, "/data/synthetic", "synthetic")


def bench_merge(args) -> dict:
    from features_store.merge import merge
    from features_store.store import FeatureStore

    n, d = args.rows, args.dim
    manifest = _manifest(n)
    out = {}
    for n_shards in (10, 100):
        tmp = Path(args.tmp) / f"merge{n_shards}"
        tmp.mkdir(parents=True, exist_ok=True)
        size = -(-n // n_shards)
        paths = []
        t0 = time.perf_counter()
        rng = np.random.default_rng(1)
        for k in range(n_shards):  # what the Ray engine's actors leave: one small store per shard
            mask = np.zeros(n, bool)
            mask[k * size:(k + 1) * size] = True
            p = tmp / f"feat-000000000000.part-{k:05d}-of-{n_shards:05d}.h5"
            with FeatureStore(p, mode="a", dtype=args.dtype) as st:
                st.set_manifest(manifest.subset(mask))
                st.ensure_config("feat-000000000000", {"name": "feat"}, name="feat")
                st.write("feat-000000000000", np.arange(int(mask.sum())),
                         rng.standard_normal((int(mask.sum()), d)).astype(args.dtype))
            paths.append(p)
        t_write = time.perf_counter() - t0
        main = tmp / "main.h5"
        with FeatureStore(main, mode="a", dtype=args.dtype) as st:
            st.set_manifest(manifest)
        t0 = time.perf_counter()
        merge(main, paths)
        t_merge = time.perf_counter() - t0
        with FeatureStore(main, mode="r") as st:
            assert st.counts("feat-000000000000")["done"] == n
        out[n_shards] = {"merge_s": t_merge, "shard_write_s": t_write, "rows_per_s": n / t_merge,
                         "shard_file_mb": round(os.path.getsize(paths[0]) / 1e6, 1),
                         "merged_file_mb": round(os.path.getsize(main) / 1e6, 1), "load_avg": load_avg()}
        print(f"merge {n_shards} shards of {n} x {d} {args.dtype}: {t_merge:.1f} s ({n / t_merge:,.0f} rows/s); "
              f"writing the shards took {t_write:.1f} s; load {load_avg()}", flush=True)
        shutil.rmtree(tmp)
    res = {"rows": n, "dim": d, "dtype": args.dtype, "shards": out}
    print(json.dumps({"merge": res}, indent=1), flush=True)
    return res


# ------------------------------------------------------------------ 3. fit
FIT_DIMS = {"generator": 7, "content_a": 505, "content_b": 512, "content_c": 512}  # 1,536 columns


def synthetic(n: int, seed: int = 0):
    """Generator one-hot + three content blocks; the target depends on generator and content."""
    from regressors.heads import blocks_from_dims

    rng = np.random.default_rng(seed)
    gen = rng.integers(0, FIT_DIMS["generator"], n)
    X = rng.standard_normal((n, sum(FIT_DIMS.values())))
    X[:, :FIT_DIMS["generator"]] = np.eye(FIT_DIMS["generator"])[gen]
    y = 0.4 * gen + np.tanh(X[:, 10]) + 0.5 * X[:, 600] * X[:, 1200] + 0.3 * rng.standard_normal(n)
    groups = (np.arange(n) // 4).astype(str)  # four images per prompt
    return X, y, groups, blocks_from_dims(FIT_DIMS)


def fit_one(n: int, trials: int) -> dict:
    """One fit in this process (called in a fresh subprocess per size)."""
    from regressors.stacking import StackConfig, fit_stack

    X, y, groups, blocks = synthetic(n)
    cfg = StackConfig(heads=("enet", "lgbm", "knn"), n_trials=trials, n_jobs=1)
    t0 = time.perf_counter()
    model = fit_stack(X, y, groups, blocks, cfg)
    secs = time.perf_counter() - t0
    return {"items": n, "dims": X.shape[1], "fit_s": secs, "data_mb": round(X.nbytes / 1e6),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "heads": model.names, "trials": trials, "load_avg": load_avg()}


def svr_one(n: int) -> dict:
    from regressors.heads import make_head

    X, y, _, blocks = synthetic(n)
    t0 = time.perf_counter()
    make_head("svr", blocks=blocks, pca=128).fit(X, y)
    return {"items": n, "svr_fit_s": time.perf_counter() - t0,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "load_avg": load_avg()}


def _child(kind: str, n: int, trials: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--items", str(n), "--trials", str(trials)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                                   "OPENBLAS_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_fit(args) -> dict:
    rows = []
    for n in args.fit_items:
        rows.append(_child("fit", n, args.trials))
        print(f"fit {n} x 1536: {rows[-1]['fit_s']:.0f} s, peak RSS {rows[-1]['peak_rss_mb']} MB; "
              f"load {rows[-1]['load_avg']}", flush=True)
    svr = []
    for n in args.svr_items:
        svr.append(_child("svr", n, 0))
        print(f"svr fit {n} x 1536 (PCA 128 per block): {svr[-1]['svr_fit_s']:.1f} s; load {svr[-1]['load_avg']}",
              flush=True)
    if len(svr) >= 2:
        a, b = svr[0], svr[-1]
        exponent = np.log(b["svr_fit_s"] / a["svr_fit_s"]) / np.log(b["items"] / a["items"])
    else:
        exponent = None
    res = {"fit": rows, "svr": svr, "svr_time_exponent": exponent,
           "budget": "heads enet,lgbm,knn (+ per-block enet), 2 trials each, max_tune_items 4000, 1 worker"}
    print(json.dumps({"fit": res}, indent=1), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["engine", "merge", "fit"], default=None)
    ap.add_argument("--repeat", type=int, default=2, help="engine: interleaved repetitions")
    ap.add_argument("--size", type=int, default=384, help="engine: demo image side (pixels)")
    ap.add_argument("--crops", type=int, default=4, help="engine: crops per demo photo (16 photos x crops x 6 items)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--fit-items", type=int, nargs="+", default=[14_000, 50_000, 100_000])
    ap.add_argument("--svr-items", type=int, nargs="+", default=[3_500, 7_000, 14_000])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["fit", "svr"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    if args.child:
        print(json.dumps(fit_one(args.items, args.trials) if args.child == "fit" else svr_one(args.items)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # the same CPU work on both sides: one thread per process for OpenCV/OpenMP/BLAS, in this process
    # (the local runner) and in the Ray workers (they inherit the environment of the cluster started here)
    for var in ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    # Ray starts its workers at nice 15 (RAY_worker_niceness): on a machine shared with other jobs at
    # nice 0 they then get a fraction of the CPU the local runner gets (measured here at load 25: the
    # same 40 nss items, the same 1.2 s of CPU, 13.8 s wall in an actor vs 3.7 s locally). A dedicated
    # node has nothing to yield to; here the comparison is made at equal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import cv2

    cv2.setNumThreads(1)
    print(f"load average at start: {load_avg()} on {os.cpu_count()} cores", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = args.tmp or tmp
        for name, fn in (("engine", bench_engine), ("merge", bench_merge), ("fit", bench_fit)):
            if args.only in (None, name):
                results[name] = fn(args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
