"""Regression speed: the default-budget fit at 14,000 items x ~2,000 dims, scaling, pruning.

Features: real generator one-hot + MiniLM prompt embeddings of AIGIQA-20K's training
labels where ../shared/data is present (random blocks otherwise), padded with random
blocks up to ``--dims``. Three measurements, each printed as it finishes:

1. ``full``: what `python -m regressors fit` does with the default budget
   (cross_validate + final fit; nested=auto is split at 14,000 items), wall time and
   peak RSS;
2. ``scaling``: one fit of each head at growing item counts and widths;
3. ``pruning``: the same Optuna search (seeded TPE) with and without the MedianPruner;
   ratio of wall time, and the best scores reached.

BLAS runs single-threaded (as in `regressors fit`); every result carries the load
average, since the machine is shared and other jobs stretch every time printed here.

    .venv/bin/python benchmarks/bench_regress.py                   # all three
    .venv/bin/python benchmarks/bench_regress.py --only pruning --trials 30
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import _results  # noqa: E402


def features(n: int, dims: int, seed: int = 0):
    """(X, y, groups, blocks): real blocks if available, padded with random 512-wide blocks."""
    from regressors.heads import blocks_from_dims

    rng = np.random.default_rng(seed)
    try:
        from floor_benchmark import SHARED, load

        if not SHARED.is_dir():
            raise FileNotFoundError(SHARED)
        X, y, groups, _, blocks = load("aigiqa20k")
        real = "generator + prompt_minilm (AIGIQA-20K train labels)"
    except Exception as err:  # noqa: BLE001 - fall back to synthetic data, say so
        print(f"(no real features: {err}; using random blocks)")
        X = rng.normal(size=(14000, 400))
        y = X[:, 0] + 0.5 * rng.normal(size=14000)
        groups = np.arange(14000).astype(str)
        blocks = {"real": [0, 400]}
        real = "random"
    idx = rng.permutation(len(y))[:n] if n <= len(y) else rng.integers(0, len(y), n)
    X, y, groups = X[idx], y[idx], groups[idx]
    dims_now = {b: r[1] - r[0] for b, r in blocks.items()}
    pad, k = dims - X.shape[1], 0
    parts = [X]
    while pad > 0:
        w = min(512, pad)
        parts.append(rng.normal(size=(n, w)).astype(np.float64))
        dims_now[f"random{k}"] = w
        pad, k = pad - w, k + 1
    return np.hstack(parts), y, groups, blocks_from_dims(dims_now), real


def load_avg() -> list[float]:
    """1/5/15-min load average: other jobs on a shared 2-core machine inflate every time here."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> dict:
    """User + system CPU of this process and of its reaped children (the worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self": me.ru_utime + me.ru_stime, "workers": kids.ru_utime + kids.ru_stime,
            "worker_peak_rss_mb": kids.ru_maxrss / 1024}


def bench_full(args) -> dict:
    from regressors.stacking import StackConfig, cross_validate, fit_stack, resolve_jobs

    X, y, groups, blocks, real = features(args.items, args.dims)
    cfg = StackConfig(n_jobs=args.jobs)
    t0 = time.perf_counter()
    cv = cross_validate(X, y, groups, blocks, cfg)
    t_cv = time.perf_counter() - t0
    fit_stack(X, y, groups, blocks, cfg, tuned=cv.get("tuned"))
    total = time.perf_counter() - t0
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # reap the workers so that their CPU time and memory count
    from regressors.metrics import main_score

    heads = cv["info"].get("tuning_set", {}).get("heads", {})
    out = {"load_avg_end": load_avg(), "items": len(y), "dims": X.shape[1],
           "blocks": {b: r[1] - r[0] for b, r in blocks.items()}, "real": real, "workers": resolve_jobs(cfg.n_jobs),
           "cv_s": t_cv, "total_s": total, "cpu_s": cpu_seconds(), "peak_rss_mb": peak_rss_mb(),
           "tuning_s_per_head": {k: round(v.get("seconds", 0.0), 1) for k, v in heads.items()},
           "cv_main": main_score(cv["stack"], y[cv["scored"]]), "config": cfg.to_dict()}
    print(json.dumps({"full": out}, indent=1), flush=True)
    cpu = out["cpu_s"]
    _results.write("regress_full", [{
        "items × dims": f"{out['items']:,} × {out['dims']:,}", "features": real, "workers": out["workers"],
        "wall s (CV + final fit)": round(total), "CV s": round(t_cv), "CPU s in the workers": round(cpu["workers"]),
        "main process peak MB": round(out["peak_rss_mb"]), "largest worker peak MB": round(cpu["worker_peak_rss_mb"]),
        "CV main": round(out["cv_main"], 4)}], {"tuning s per head": out["tuning_s_per_head"]})
    return out


def bench_scaling(args) -> dict:
    from regressors.heads import make_head

    rows = []
    for n, d in [(3500, 2000), (7000, 2000), (14000, 2000), (14000, 500), (14000, 1000)]:
        X, y, groups, blocks, _ = features(n, d)
        for kind in ("svr", "enet", "lgbm", "knn"):
            t0 = time.perf_counter()
            make_head(kind, blocks=blocks, pca=128).fit(X, y)
            rows.append({"items": n, "dims": X.shape[1], "head": kind, "seconds": time.perf_counter() - t0,
                         "load_avg": load_avg()})
            print(rows[-1], flush=True)
    table = {}
    for r in rows:  # one row per size, one column per head
        table.setdefault((r["items"], r["dims"]), {"items × dims": f"{r['items']:,} × {r['dims']:,}"})[
            f"{r['head']} s"] = round(r["seconds"], 2)
    _results.write("regress_scaling", list(table.values()), {"fit": "one fit per head, per-block PCA to 128"})
    return {"rows": rows}


def bench_pruning(args) -> dict:
    from regressors.tuning import tune_head

    X, y, groups, blocks, _ = features(4000, 400)
    out = {}
    for kind in ("svr", "lgbm"):
        res = {}
        for prune in (True, False):
            r = tune_head(kind, X, y, groups, base_params={"blocks": blocks, "pca": 128}, n_trials=args.trials,
                          n_splits=3, seed=0, prune=prune)
            res["pruned" if prune else "unpruned"] = {"seconds": r.seconds, "best": r.best_score,
                                                      "n_pruned": r.n_pruned}
        res["time_ratio_pruned_over_unpruned"] = res["pruned"]["seconds"] / res["unpruned"]["seconds"]
        res["best_score_gap"] = res["pruned"]["best"] - res["unpruned"]["best"]  # ~0: same best at less time
        res["load_avg"] = load_avg()
        out[kind] = res
        print(json.dumps({"pruning": {kind: res}}, indent=1), flush=True)
    _results.write("regress_pruning", [
        {"head": k, "pruned / unpruned wall": round(r["time_ratio_pruned_over_unpruned"], 2),
         "trials pruned": f"{r['pruned']['n_pruned']} of {args.trials}", "best pruned": round(r["pruned"]["best"], 4),
         "best unpruned": round(r["unpruned"]["best"], 4)} for k, r in out.items()],
        {"search": f"{args.trials} trials, 4,000 × 400, 3 folds"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["full", "scaling", "pruning"], default=None)
    ap.add_argument("--items", type=int, default=14000)
    ap.add_argument("--dims", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--out", default=None)
    ap.add_argument("--jobs", type=int, default=-1, help="worker processes for the heads (StackConfig.n_jobs)")
    ap.add_argument("--blas-threads", type=int, default=1, help="as `regressors fit` (1: see regressors.cli)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.blas_threads, user_api="blas")
    print(f"load average at start: {load_avg()} on {__import__('os').cpu_count()} cores", flush=True)
    results = {}
    for name, fn in (("full", bench_full), ("scaling", bench_scaling), ("pruning", bench_pruning)):
        if args.only in (None, name):
            results[name] = fn(args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
