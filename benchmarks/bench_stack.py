"""Does the default stack gain (never lose) when feature blocks are added?

For each dataset, on the same honest nesting (``regressors.stacking.cross_validate``:
nothing is chosen on a scored item) and the same folds, it scores:

* ``before``: the stack as it was (``select_blocks=False``) on all blocks;
* ``after``: the current default (nested block selection) on all blocks;
* every block subset with ``before`` (the best of them, picked in hindsight, is the bar the
  default should reach within 0.02; with one block both settings are the same);
* ``before + noise`` / ``after + noise``: all blocks plus a pure-noise block of 1,000
  standard-normal dimensions (the default should lose at most 0.01 to it);
* optional ``--variants`` (other meta-learners / selection settings, see VARIANTS).

Each row: main with a 95% percentile bootstrap interval over the scored items, and the
paired bootstrap difference to ``after`` (same resampled items). Datasets:

* ``demo``: the ``make demo`` store (nss, effnet_lite0, prompt_minilm, generator);
* ``fetv_static`` / ``fetv_temporal``: a FETV store (generator, prompt_minilm, nss and
  effnet_lite0 over frames), ``--fetv-store``;
* ``aigiqa20k`` / ``t2vqa_db``: label-only, generator + prompt_minilm built from the
  shipped label files (floor_benchmark.load, MiniLM cached in $AIGCQ_CACHE).

The budget is reduced to run on 2 shared cores (``--trials``, ``--max-tune-items``; the
same settings for every row of a dataset, and printed with the table): the numbers compare
rows, they are not the library's best scores.

    python benchmarks/bench_stack.py --datasets demo --demo-store runs/demo/demo.h5
    python benchmarks/bench_stack.py --datasets fetv_static,fetv_temporal --fetv-store /tmp/fetv.h5
    python benchmarks/bench_stack.py --datasets aigiqa20k,t2vqa_db --subsets none --trials 4
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import _results  # noqa: E402

NOISE_DIMS = 1000
STORE_BLOCKS = {"demo": ("image", ["generator", "prompt_minilm", "nss", "effnet_lite0"], "mos"),
                "fetv_static": ("video", ["generator", "prompt_minilm", "nss", "effnet_lite0"], "static_quality"),
                "fetv_temporal": ("video", ["generator", "prompt_minilm", "nss", "effnet_lite0"], "temporal_quality")}
# extra settings to compare (--variants): name -> StackConfig overrides
VARIANTS = {
    # a non-negative meta-learner over one untuned head per block only: it can zero a block, but no head
    # sees two blocks at once (no generator x prompt interaction)
    "block heads only": {"heads": (), "select_blocks": False},
    "select tol 0": {"select_blocks": True, "select_tolerance": 0.0},
    "select tol 0.02": {"select_blocks": True, "select_tolerance": 0.02},
}


def load_dataset(name: str, args):
    """(X, y, groups, blocks) of the labelled training items."""
    if name in STORE_BLOCKS:
        from experiments.ablate import load_blocks

        track, exs, target = STORE_BLOCKS[name]
        store = args.demo_store if name == "demo" else args.fetv_store
        if not store or not Path(store).is_file():
            raise FileNotFoundError(f"{name}: store {store!r} not found (see --demo-store / --fetv-store)")
        b = load_blocks(store, exs, target=target, track=track)
        X, blocks = b.matrix(b.names)
        return X, b.y, b.groups, blocks
    if name == "aigiqa20k" and args.aigiqa_store:  # generator + prompt_minilm already in a store
        from experiments.ablate import load_blocks

        b = load_blocks(args.aigiqa_store, ["generator", "prompt_minilm"], target="mos", track="image")
        X, blocks = b.matrix(b.names)
        return X, b.y, b.groups, blocks
    from floor_benchmark import SHARED, load

    if not SHARED.is_dir():
        raise FileNotFoundError(f"{SHARED} is absent: {name} needs the shipped label files")
    X, y, groups, _, blocks = load(name)
    return X, y, groups, blocks


def with_noise(X, blocks, seed: int = 123):
    from regressors.heads import blocks_from_dims

    noise = np.random.default_rng(seed).normal(size=(len(X), NOISE_DIMS))
    dims = {b: r[1] - r[0] for b, r in blocks.items()}
    return np.hstack([X, noise]), blocks_from_dims({**dims, "noise": NOISE_DIMS})


def sub_matrix(X, blocks, names):
    from regressors.heads import blocks_from_dims

    cols = np.concatenate([np.arange(*blocks[n]) for n in names])
    return X[:, cols], blocks_from_dims({n: blocks[n][1] - blocks[n][0] for n in names})


def run_cv(X, y, groups, blocks, cfg):
    from regressors.stacking import cross_validate

    t0 = time.perf_counter()
    cv = cross_validate(X, y, groups, blocks, cfg)
    kept = []
    info = cv["info"]
    for part in ([info.get("tuning_set", {}), info.get("tuning_set_swapped", {})] + list(info.get("outer", []))):
        sel = part.get("block_selection")
        if sel:
            kept.append("+".join(sel["kept"]))
    return cv["scored"], cv["stack"], time.perf_counter() - t0, kept


def selection_only(name, X, y, groups, blocks, cfg, args) -> None:
    """The default stack's block selection on the very tuning set its CV and final fit would tune on.

    When it keeps every block, the default stack *is* the previous one (same heads, same seeds,
    same predictions), so its score is the one measured before; with a noise block, when it drops
    exactly the noise, the stack is again that same computation (the heads read only the kept
    blocks' columns): a cost of exactly 0. A large dataset's full CV takes hours on 2 shared cores;
    this takes minutes.
    """
    from regressors.block_selection import select_blocks
    from regressors.stacking import _tuning_subset, fit_folds, resolve_nested

    n = len(y)
    nested = resolve_nested(cfg, n)
    c = fit_folds(cfg, groups, n, nested)
    sub = _tuning_subset(groups, n, c, c.seed, fraction=nested in ("split", "cross"))
    print(f"\n## {name}: {n} items, {len(set(groups))} groups; nesting `{nested}`, tuning set {len(sub)} items "
          f"(selection only); load {os.getloadavg()[0]:.1f}", flush=True)
    print("| blocks offered | kept | dropped | proxy score per subset (mean over folds) | s |\n|---|---|---|---|---|")
    Xn, bn = with_noise(X, blocks)
    table = []
    for label, Xv, bv in (("all", X, blocks), ("all + noise", Xn, bn)):
        kept, info = select_blocks(Xv[sub], y[sub], groups[sub], bv, seed=c.seed, protocol=c.protocol, pca=c.pca,
                                   tolerance=c.select_tolerance)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(info["scores"].items(), key=lambda kv: -kv[1]))
        print(f"| {label} | {'+'.join(kept)} | {'+'.join(info['dropped']) or '—'} | {scores} | {info['seconds']:.0f} |",
              flush=True)
        table.append({"blocks offered": label, "kept": "+".join(kept), "dropped": "+".join(info["dropped"]) or None,
                      "proxy score per subset": scores, "seconds": round(info["seconds"])})
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"dataset": name, "variant": f"selection only: {label}", "kept": kept,
                                    "scores": info["scores"], "rows": info["rows"], "seconds": info["seconds"],
                                    "load": os.getloadavg()[0]}) + "\n")
    _results.write(f"stack_selection-{name}", table, {"items": n, "groups": len(set(groups)), "nesting": nested,
                                                       "tuning set": len(sub)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="demo", help="comma list: demo, fetv_static, fetv_temporal, aigiqa20k, t2vqa_db")
    ap.add_argument("--demo-store", default="runs/demo/demo.h5")
    ap.add_argument("--fetv-store", default=None)
    ap.add_argument("--aigiqa-store", default=None, help="a store with generator + prompt_minilm of AIGIQA-20K "
                    "(default: built from the label file, MiniLM cached in $AIGCQ_CACHE)")
    ap.add_argument("--trials", type=int, default=4, help="Optuna trials per tuned head (default fit: 12)")
    ap.add_argument("--heads", default="svr,enet,lgbm,knn")
    ap.add_argument("--max-tune-items", type=int, default=2000, help="default fit: 4,000")
    ap.add_argument("--subsets", default="all",
                    help="block subsets to score with `before`: all (the hindsight best is exact), singles, none, "
                         "or a comma list such as generator,nss,generator+nss")
    ap.add_argument("--variants", default="", help=f"comma list of {sorted(VARIANTS)}")
    ap.add_argument("--no-noise", action="store_true")
    ap.add_argument("--only-subsets", action="store_true", help="only the --subsets rows (Δ then against the first)")
    ap.add_argument("--selection-only", action="store_true",
                    help="only the default's block selection on the tuning set, with and without the noise block "
                         "(for the 7,000- and 14,000-item sets; see selection_only)")
    ap.add_argument("--skip-before", action="store_true", help="no `before` rows on all blocks (rerunning `after` only)")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=None, help="append every row as JSON lines here")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from regressors.metrics import evaluate
    from regressors.stacking import StackConfig

    threadpool_limits(1, user_api="blas")
    base = StackConfig(heads=tuple(h for h in args.heads.split(",") if h), n_trials=args.trials,
                       max_tune_items=args.max_tune_items, n_jobs=args.n_jobs)
    before, after = replace(base, select_blocks=False), base
    for name in [d for d in args.datasets.split(",") if d]:
        X, y, groups, blocks = load_dataset(name, args)
        if args.selection_only:
            selection_only(name, X, y, groups, blocks, after, args)
            continue
        names = list(blocks)
        rows: list[tuple[str, StackConfig, np.ndarray, dict]] = [] if args.only_subsets else [
            ("after (default): all blocks", after, X, blocks)]
        if not args.skip_before and not args.only_subsets:
            rows.append(("before: all blocks", before, X, blocks))
        if args.subsets in ("all", "singles"):
            sizes = range(1, len(names)) if args.subsets == "all" else [1]
            subsets = [list(sub) for r in sizes for sub in itertools.combinations(names, r)]
        elif args.subsets == "none":
            subsets = []
        else:  # an explicit list
            subsets = [sub.split("+") for sub in args.subsets.split(",")]
        for sub in subsets:
            Xs, bs = sub_matrix(X, blocks, sub)
            rows.append((f"before: {'+'.join(sub)}", before, Xs, bs))
        for v in [v for v in args.variants.split(",") if v]:
            rows.append((f"variant {v}: all blocks", replace(base, **VARIANTS[v]), X, blocks))
        if not args.no_noise and not args.only_subsets:
            Xn, bn = with_noise(X, blocks)
            rows.append(("after (default): all + noise", after, Xn, bn))
            if not args.skip_before:
                rows.append(("before: all + noise", before, Xn, bn))
        print(f"\n## {name}: {len(y)} items, {len(set(groups))} groups, blocks "
              f"{ {b: r[1] - r[0] for b, r in blocks.items()} }; {args.trials} trials/head, heads {args.heads}, "
              f"max tune items {args.max_tune_items}; load {os.getloadavg()[0]:.1f}", flush=True)
        print("| variant | main [95% CI] | Δ vs first row [95% CI] | blocks kept (per tuning) | s |\n|---|---|---|---|---|",
              flush=True)
        ref, ref_kept = None, None
        full = "+".join(names)
        table = []
        for label, cfg, Xv, bv in rows:
            if label == "before: all blocks" and ref_kept and all(k == full for k in ref_kept):
                # selection kept every block in every tuning: `before` is the very same computation
                print(f"| {label} | same as after: selection kept every block | | | |", flush=True)
                table.append({"variant": label, "main [95% CI]": "same as after: selection kept every block"})
                continue
            scored, pred, secs, kept = run_cv(Xv, y, groups, bv, cfg)
            ev = evaluate(pred, y[scored], n_boot=args.n_boot, seed=0)
            lo, hi = ev["ci"]["main"]
            if ref is None:
                ref, ref_scored, ref_kept = pred, scored, kept
                delta = "—"
            else:
                from experiments.ablate import _paired_delta

                assert np.array_equal(scored, ref_scored), "rows must score the same items"
                d = ev["main"] - evaluate(ref, y[scored], n_boot=0)["main"]
                dlo, dhi = _paired_delta(pred, ref, y[scored], min(args.n_boot, 500), 0)
                delta = f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
            kept_s = "; ".join(sorted(set(kept), key=kept.index)) if kept else "—"
            print(f"| {label} | {ev['main']:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | {kept_s} | {secs:.0f} |", flush=True)
            table.append({"variant": label, "main [95% CI]": f"{ev['main']:.3f} [{lo:.3f}, {hi:.3f}]",
                          "Δ vs first row [95% CI]": delta, "blocks kept (per tuning)": kept_s, "seconds": round(secs)})
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({"dataset": name, "variant": label, "main": ev["main"], "ci": [lo, hi],
                                        "delta": delta, "kept": kept, "n_scored": int(len(scored)),
                                        "seconds": secs, "trials": args.trials, "heads": args.heads,
                                        "max_tune_items": args.max_tune_items, "load": os.getloadavg()[0]}) + "\n")
        _results.write(f"stack-{name}", table, {"items": len(y), "groups": len(set(groups)), "trials per head": args.trials,
                                                "heads": args.heads, "max tune items": args.max_tune_items})


if __name__ == "__main__":
    main()
