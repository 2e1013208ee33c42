"""Generator probe on FETV: the generator hidden at test time, grouped by prompt.

Outer grouped 5-fold CV by prompt (every test fold holds prompts never seen in training);
on each outer training fold the default stack (reduced budget, see --trials) is fitted as:

* ``without generator``: on the content blocks only (prompt_minilm, nss, effnet_lite0);
* ``with generator``: on all blocks, the true generator given at test time too (the ceiling);
* ``probe (OOF-trained)``: the training rows' generator block replaced by out-of-fold probe
  probabilities (grouped folds inside the training fold), the test rows' by a probe fitted
  on the whole training fold (:mod:`regressors.generator_probe`);
* ``probe into the with-generator stack``: the ``with generator`` model, test rows' generator
  block replaced by the probe's probabilities (no retraining).

Prints main [95% bootstrap CI] for each, the fraction of the gap closed,
(probe - without) / (with - without), paired bootstrap intervals of it, and the probe's
accuracy naming the right generator (pooled out of fold).

    python benchmarks/bench_generator_probe.py --store /tmp/fetv.h5 --targets static_quality,temporal_quality
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

EXTRACTORS = ["generator", "prompt_minilm", "nss", "effnet_lite0"]


def gap_interval(p_without, p_with, p_probe, y, n_boot=1000, seed=0):
    """Percentile bootstrap of the gap fraction over the same resampled items."""
    from regressors.metrics import MetricError, main_score

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        try:
            a, b, c = (main_score(p[i], y[i]) for p in (p_without, p_with, p_probe))
        except MetricError:
            continue
        if b - a > 1e-6:
            out.append((c - a) / (b - a))
    return [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))] if out else [np.nan, np.nan]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="FETV store with generator, prompt_minilm, nss, effnet_lite0")
    ap.add_argument("--targets", default="static_quality,temporal_quality")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--heads", default="svr,enet,lgbm,knn")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from experiments.ablate import load_blocks
    from regressors.generator_probe import GeneratorProbe, fill_generator, oof_generator_block
    from regressors.metrics import evaluate
    from regressors.stacking import StackConfig, fit_stack
    from regressors.tuning import make_folds

    threadpool_limits(1, user_api="blas")
    cfg = StackConfig(heads=tuple(args.heads.split(",")), n_trials=args.trials, n_jobs=1)
    results, table = {}, []
    for target in args.targets.split(","):
        t0 = time.perf_counter()
        b = load_blocks(args.store, EXTRACTORS, target=target, track="video")
        X, blocks = b.matrix(b.names)
        y, groups = b.y, b.groups
        content = [n for n in b.names if n != "generator"]
        cols = np.concatenate([np.arange(*blocks[n]) for n in content])
        from regressors.heads import blocks_from_dims

        Xc, bc = X[:, cols], blocks_from_dims({n: blocks[n][1] - blocks[n][0] for n in content})
        preds = {k: np.zeros(len(y)) for k in ("without generator", "with generator", "probe (OOF-trained)",
                                                "probe into the with-generator stack")}
        hit = np.zeros(len(y), bool)
        g0, g1 = blocks["generator"]
        for k, (tr, te) in enumerate(make_folds(len(y), groups, args.folds, 1, "grouped")):
            c = StackConfig(**{**cfg.to_dict(), "seed": 100 * (k + 1)})
            preds["without generator"][te] = fit_stack(Xc[tr], y[tr], groups[tr], bc, c, tag=f"wo{k}").predict(Xc[te])
            with_gen = fit_stack(X[tr], y[tr], groups[tr], blocks, c, tag=f"w{k}")
            preds["with generator"][te] = with_gen.predict(X[te])
            probe = GeneratorProbe(blocks=blocks).fit(X[tr])
            X_te = fill_generator(X[te], probe, rows=np.ones(len(te), bool))
            hit[te] = probe.predict(X[te]) == np.argmax(X[te, g0:g1], axis=1)
            preds["probe into the with-generator stack"][te] = with_gen.predict(X_te)
            X_tr = oof_generator_block(X[tr], groups[tr], blocks, n_splits=3, seed=c.seed)
            preds["probe (OOF-trained)"][te] = fit_stack(X_tr, y[tr], groups[tr], blocks, c, tag=f"p{k}").predict(X_te)
        res = {"n": int(len(y)), "probe_accuracy": float(hit.mean()), "seconds": time.perf_counter() - t0,
               "load": os.getloadavg()[0], "trials": args.trials, "heads": args.heads}
        lo_, hi_ = preds["without generator"], preds["with generator"]
        print(f"\n## FETV {target}: {len(y)} clips, {len(set(groups))} prompts, grouped {args.folds}-fold; "
              f"{args.trials} trials/head; load {res['load']:.1f}")
        print("| variant | main [95% CI] | gap closed [95% CI] |\n|---|---|---|")
        ev_wo, ev_w = evaluate(lo_, y, n_boot=0)["main"], evaluate(hi_, y, n_boot=0)["main"]
        for name, p in preds.items():
            ev = evaluate(p, y, n_boot=1000, seed=0)
            row = {"main": ev["main"], "ci": ev["ci"]["main"]}
            gap = ""
            if name.startswith("probe"):
                row["gap_closed"] = (ev["main"] - ev_wo) / (ev_w - ev_wo) if ev_w > ev_wo else float("nan")
                row["gap_ci"] = gap_interval(lo_, hi_, p, y)
                gap = f"{row['gap_closed']:.2f} [{row['gap_ci'][0]:.2f}, {row['gap_ci'][1]:.2f}]"
            res[name] = row
            print(f"| {name} | {ev['main']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}] | {gap} |")
        print(f"probe accuracy naming the generator (5 classes incl. real 'gt' clips, out of fold): "
              f"{res['probe_accuracy']:.3f}; {res['seconds']:.0f} s")
        results[target] = res
        fmt = lambda r: f"{r['main']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"  # noqa: E731
        gap = lambda r: f"{r['gap_closed']:.2f} [{r['gap_ci'][0]:.2f}, {r['gap_ci'][1]:.2f}]"  # noqa: E731
        table.append({"FETV target": target, "without generator": fmt(res["without generator"]),
                      "with generator": fmt(res["with generator"]),
                      "probe, stack trained on OOF probe outputs": fmt(res["probe (OOF-trained)"]),
                      "gap closed": gap(res["probe (OOF-trained)"]),
                      "probe into the with-generator stack": fmt(res["probe into the with-generator stack"]),
                      "gap closed (into the stack)": gap(res["probe into the with-generator stack"]),
                      "probe accuracy": round(res["probe_accuracy"], 3)})
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    _results.write("generator_probe", table, {"folds": f"grouped {args.folds}-fold by prompt", "trials per head": args.trials,
                                              "heads": args.heads})


if __name__ == "__main__":
    main()
