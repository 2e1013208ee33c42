"""Feature store speed vs numpy.save / numpy.load, measured in one run (page cache warm).

    .venv/bin/python benchmarks/bench_store.py [--rows 20000] [--dim 1536] [--dtype float16] [--repeat 5]

Prints median seconds and ratios (numpy time / store time; 1.0 = as fast as numpy).
Goal: full read >= 0.5x numpy's speed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import _results
from features_store import FeatureStore, load_features
from features_store.manifest import Manifest


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, d = args.rows, args.dim
    x = np.random.default_rng(0).standard_normal((n, d)).astype(args.dtype)
    ids = [f"img_{i:06d}.png" for i in range(n)]
    m = Manifest(pd.DataFrame({"item_id": ids, "path": ids, "prompt": [f"a prompt number {i}" for i in range(n)],
                               "mos": np.linspace(0, 5, n), "split": "train"}), "/data", "bench")
    identity = {"name": "bench", "dim": d}
    key = "bench-000000000000"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def np_write():
            np.save(tmp / "x.npy", x)

        def np_read():
            return np.load(tmp / "x.npy")

        def st_write():
            for p in tmp.glob("s.h5*"):
                if p.is_file():
                    p.unlink()
            with FeatureStore(tmp / "s.h5", dtype=args.dtype) as st:
                st.set_manifest(m)
                st.ensure_config(key, identity)
                st.write(key, np.arange(n), x)  # journal, then checkpoint on close

        def st_read():
            with FeatureStore(tmp / "s.h5", "r") as st:
                return st.read(key, dtype=None)

        def api_read():
            return load_features(tmp / "s.h5", [key], split="train", target="mos", dtype=None)[0]

        t_npw, _ = timed(np_write, args.repeat)
        t_npr, a = timed(np_read, args.repeat)
        t_stw, _ = timed(st_write, args.repeat)
        t_str, b = timed(st_read, args.repeat)
        with FeatureStore(tmp / "s.h5", "r") as st:
            t_raw, _ = timed(lambda: st.read(key, dtype=None), args.repeat)
        t_api, c = timed(api_read, args.repeat)
        assert np.array_equal(a, b) and np.array_equal(a, c)
        size_mb = x.nbytes / 1e6
        print(f"{n} x {d} {args.dtype} ({size_mb:.0f} MB), median of {args.repeat}")
        print(f"{'':28s}{'seconds':>9s}{'MB/s':>9s}{'numpy/store':>13s}")
        rows = []
        for name, t, ref in [
            ("numpy.save", t_npw, None), ("store write (+manifest)", t_stw, t_npw),
            ("numpy.load", t_npr, None), ("store open + full read", t_str, t_npr),
            ("store full read (open)", t_raw, t_npr), ("load_features (+labels)", t_api, t_npr),
        ]:
            ratio = f"{ref / t:12.2f}x" if ref else ""
            print(f"{name:28s}{t:9.3f}{size_mb / t:9.0f}{ratio:>13s}")
            rows.append({"operation": name, "seconds": round(t, 4), "MB/s": round(size_mb / t),
                         "numpy time / store time": round(ref / t, 2) if ref else None})
        print(f"goal: full read >= 0.50x numpy -> {'met' if t_npr / t_str >= 0.5 else 'NOT met'} "
              f"({t_npr / t_str:.2f}x with open, {t_npr / t_raw:.2f}x read alone)")
        _results.write("store", rows, {"array": f"{n} x {d} {args.dtype} ({size_mb:.0f} MB)",
                                       "median of": args.repeat,
                                       "goal: full read >= 0.5x numpy": "met" if t_npr / t_str >= 0.5 else "NOT met"})


if __name__ == "__main__":
    main()
