"""LightGBM's search: time and the score it reaches, for cheaper search variants.

On the tuning set that `regressors fit` uses (nested split: whole prompts, at most 4,000
items of a store's training items), each variant runs the seeded Optuna search of the
LightGBM head (3 grouped folds, pruned) and reports its wall time, the best search score,
and the honest score of the chosen parameters: fitted on the tuning set, scored on the
other items (never seen in the search). Variants run one after another in one process.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_lgbm_search.py --store /tmp/fit/aigiqa.h5
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

# name -> (trials, boosting-round range, learning-rate range)
VARIANTS = {
    "current (12 trials, 100-800 rounds)": (12, (100, 800), (0.01, 0.2)),
    "fewer rounds (12 trials, 50-300 rounds, rate 0.02-0.3)": (12, (50, 300), (0.02, 0.3)),
    "fewer trials (6 trials, 100-800 rounds)": (6, (100, 800), (0.01, 0.2)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--extractors", default="generator,prompt_minilm")
    ap.add_argument("--seeds", default="0", help="comma-separated search seeds")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    from regressors import tuning
    from regressors.heads import make_head
    from regressors.metrics import main_score
    from regressors.data import load_track
    from regressors.stacking import StackConfig, _tuning_subset, base_specs, fit_folds

    data = load_track(args.store, [e for e in args.extractors.split(",") if e], split="train", target="mos")
    groups = np.asarray(data.groups)
    cfg = fit_folds(StackConfig(), groups, len(data.y), "split")
    T = _tuning_subset(groups, len(data.y), cfg, cfg.seed)
    R = np.setdiff1d(np.arange(len(data.y)), T)
    spec = next(s for s in base_specs(data.blocks, cfg) if s.kind == "lgbm")
    print(f"tuning set {len(T)} items, scored on {len(R)}; load average {os.getloadavg()}", flush=True)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, (trials, trees, rate) in VARIANTS.items():
            tuning.LGBM_TREES, tuning.LGBM_RATE = trees, rate
            t0 = time.perf_counter()
            res = tuning.tune_head("lgbm", data.X[T], data.y[T], groups[T], base_params=dict(spec.params),
                                   n_trials=trials, n_splits=cfg.tune_folds, seed=seed)
            search_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pred = make_head("lgbm", **res.params).fit(data.X[T], data.y[T]).predict(data.X[R])
            row = {"variant": name, "seed": seed, "search_s": search_s, "refit_s": time.perf_counter() - t0,
                   "search_best": res.best_score, "heldout_main": main_score(pred, data.y[R]),
                   "n_estimators": res.params["n_estimators"], "pruned": res.n_pruned,
                   "load": [round(x, 2) for x in os.getloadavg()]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    _results.write("lgbm_search", [{"variant": r["variant"], "seed": r["seed"], "search s": round(r["search_s"]),
                                    "search best": round(r["search_best"], 4), "held-out main": round(r["heldout_main"], 4),
                                    "trials pruned": r["pruned"]} for r in rows],
                   {"tuning set": len(T), "scored on": len(R), "store": args.store})


if __name__ == "__main__":
    main()
