"""Fit time and honest score against the number of labelled items, per nesting scheme.

Reads the training features of a store (e.g. AIGIQA-20K label-only: generator + MiniLM,
400 dimensions), draws whole prompts down to each size asked (seeded), and runs what
`regressors fit` runs (cross_validate + the final fit, default StackConfig otherwise) for
each nesting scheme asked. Prints one row per (size, scheme) as it finishes: wall time,
the cross-validated main score of the stack, items scored, load average. Runs within one
process one after another, so the times compare (the machine's load is printed beside them).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_small_fit.py --store /tmp/fit/aigiqa.h5 \\
        --sizes 2982 --nested full,cross --out /tmp/fit/small.json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_small_fit.py --store /tmp/fit/aigiqa.h5 \\
        --sizes 1000,2982,6000,14000 --nested auto
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import _results  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--extractors", default="generator,prompt_minilm")
    ap.add_argument("--sizes", default="2982", help="comma-separated item counts (whole prompts drawn, seeded)")
    ap.add_argument("--nested", default="full,cross", help="comma-separated schemes: auto, split, cross, full")
    ap.add_argument("--sample-seed", type=int, default=0, help="which prompts are drawn")
    ap.add_argument("--seed", type=int, default=0, help="StackConfig.seed")
    ap.add_argument("--trials", type=int, default=None, help="Optuna trials per head (default: StackConfig's)")
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # as `regressors fit`
    from regressors.data import load_track
    from regressors.metrics import main_score
    from regressors.stacking import StackConfig, cross_validate, fit_stack, resolve_nested
    from regressors.tuning import subsample_groups

    data = load_track(args.store, [e for e in args.extractors.split(",") if e], split="train", target="mos")
    print(f"{len(data.y)} items x {data.X.shape[1]} dims; load average {load_avg()} on {os.cpu_count()} cores",
          flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        idx = subsample_groups(data.groups, n, args.sample_seed) if n < len(data.y) else np.arange(len(data.y))
        X, y, g = data.X[idx], data.y[idx], np.asarray(data.groups)[idx]
        for nested in args.nested.split(","):
            extra = {} if args.trials is None else {"n_trials": args.trials}
            cfg = StackConfig(nested=nested, n_jobs=args.jobs, seed=args.seed, **extra)
            load0 = load_avg()
            t0 = time.perf_counter()
            cv = cross_validate(X, y, g, data.blocks, cfg)
            t_cv = time.perf_counter() - t0
            fit_stack(X, y, g, data.blocks, cfg, tuned=cv.get("tuned"))
            wall = time.perf_counter() - t0
            row = {"items": int(len(y)), "nested": nested, "resolved": resolve_nested(cfg, len(y)), "wall_s": wall,
                   "cv_s": t_cv, "main": main_score(cv["stack"], y[cv["scored"]]), "scored": int(len(cv["scored"])),
                   "load_before": load0, "load_after": load_avg()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    _results.write("small_fit", [{"labelled items": r["items"], "nesting": f"{r['nested']} ({r['resolved']})",
                                  "wall s": round(r["wall_s"]), "main (CV)": round(r["main"], 4),
                                  "items scored": r["scored"], "load before": r["load_before"][0]} for r in rows],
                   {"features": args.extractors, "trials": args.trials or "StackConfig default"})


if __name__ == "__main__":
    main()
