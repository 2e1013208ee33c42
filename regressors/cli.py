"""Command line: `python -m regressors fit|predict ...` (the Makefile's `make regress` / `make predict`)."""
from __future__ import annotations

import argparse
import sys

from .stacking import StackConfig


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m regressors", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="tune, cross-validate (nested) and fit the stacked model of one track")
    f.add_argument("--track", required=True, choices=["image", "video"])
    f.add_argument("--store", required=True, help="HDF5 feature store")
    f.add_argument("--extractors", default="", help="comma-separated extractor names or store keys (default: all)")
    f.add_argument("--target", default="mos")
    f.add_argument("--out", required=True)
    f.add_argument("--trials", type=int, default=StackConfig.n_trials, help="Optuna trials per tuned head (0: defaults)")
    f.add_argument("--folds", type=int, default=StackConfig.outer_folds, help="outer CV folds")
    f.add_argument("--tune-folds", type=int, default=StackConfig.tune_folds)
    f.add_argument("--protocol", choices=["grouped", "random"], default="grouped",
                   help="grouped: one prompt never straddles folds (default); random: plain K-fold")
    f.add_argument("--nested", choices=["auto", "split", "full"], default=StackConfig.nested,
                   help="auto (default): full below --auto-full-below items, split above; split: tune on a "
                        "held-apart share of the prompts (not scored); full: tune inside every outer fold")
    f.add_argument("--auto-full-below", type=int, default=StackConfig.auto_full_below)
    f.add_argument("--heads", default=",".join(StackConfig.heads), help="tuned heads on all blocks: svr,enet,lgbm")
    f.add_argument("--block-head", default=StackConfig.block_head, help="head per extractor block; 'none' for off")
    f.add_argument("--fixed-heads", default=",".join(StackConfig.fixed_heads),
                   help="untuned preset heads added to the stack (regressors.stacking.FIXED_PRESETS); '' for none")
    f.add_argument("--max-tune-items", type=int, default=StackConfig.max_tune_items)
    f.add_argument("--pca", type=int, default=StackConfig.pca, help="per-block PCA width (0: off)")
    f.add_argument("--storage", default=None, help="Optuna storage: sqlite:///study.db or a journal file path")
    f.add_argument("--no-prune", action="store_true")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--jobs", type=int, default=StackConfig.n_jobs,
                   help="worker processes for tuning and refitting heads (-1: all cores, at most 8; 1: no workers)")
    f.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads (default 1: multi-threaded OpenBLAS spins and runs ~30x slower on a busy, "
                        "oversubscribed machine; measured 6.5 s vs 0.2 s for one 116x3840 SVD at load 5 on 2 cores)")
    f.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    f.add_argument("--submit-split", default=None, help="unlabelled split written to OUT/submission (default test)")
    p = sub.add_parser("predict", help="score a split of a store with a saved model")
    p.add_argument("--model", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--bootstrap", type=int, default=1000)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .workflow import MissingFeaturesError, fit_command, predict_command
    from .model_io import ModelChecksumError

    from threadpoolctl import threadpool_limits

    if getattr(args, "blas_threads", 0):
        threadpool_limits(args.blas_threads, user_api="blas")
    try:
        if args.command == "fit":
            cfg = StackConfig(
                heads=tuple(h for h in args.heads.split(",") if h), n_trials=args.trials,
                block_head=None if str(args.block_head).lower() in ("none", "") else args.block_head,
                fixed_heads=tuple(h for h in args.fixed_heads.split(",") if h),
                tune_folds=args.tune_folds, max_tune_items=args.max_tune_items, outer_folds=args.folds,
                nested=args.nested, auto_full_below=args.auto_full_below, pca=args.pca or None, protocol=args.protocol, seed=args.seed,
                storage=args.storage, prune=not args.no_prune, n_jobs=args.jobs)
            exts = [e for e in args.extractors.split(",") if e.strip()] or None
            fit_command(args.track, args.store, exts, args.target, args.out, cfg, n_boot=args.bootstrap,
                        submit_split=args.submit_split)
        else:
            predict_command(args.model, args.store, args.split, args.out, n_boot=args.bootstrap)
    except (MissingFeaturesError, ModelChecksumError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
