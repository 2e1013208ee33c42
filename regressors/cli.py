"""Command line: `python -m regressors fit|predict ...` (the Makefile's `make regress` / `make predict`)."""
from __future__ import annotations

import argparse
import os
import sys

from .config import StackConfig  # light: `--help` imports no numpy, scikit-learn or Optuna

MEDIA_HELP = ("read the stored features without comparing them with the media files they were computed from "
              "(default: items whose file changed size or modification time since, or is missing, are refused, "
              "naming them and the `aigcq features` command that refreshes them; label-only stores record no "
              "media and are not checked)")


def _parser(prog: str = "python -m regressors", job_progs: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """``job_progs``: how usage lines name each subcommand (``aigcq regress`` for ``fit``)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    progs = job_progs or {}
    f = sub.add_parser("fit", prog=progs.get("fit"), help="tune, cross-validate (nested) and fit the stacked model of one track")
    f.add_argument("--track", required=True, choices=["image", "video"])
    f.add_argument("--store", required=True, help="HDF5 feature store (aigcq regress: or --data DATASET [--track], "
                   "which names the store `aigcq features` wrote)")
    f.add_argument("--extractors", default="", help="comma-separated extractor names or store keys (default: all)")
    f.add_argument("--target", default="mos")
    f.add_argument("--out", required=True, help="run folder (aigcq regress: default runs/<store name>-<target>)")
    f.add_argument("--trials", type=int, default=StackConfig.n_trials, help="Optuna trials per tuned head (0: defaults)")
    f.add_argument("--folds", type=int, default=StackConfig.outer_folds, help="outer CV folds")
    f.add_argument("--tune-folds", type=int, default=StackConfig.tune_folds)
    f.add_argument("--protocol", choices=["grouped", "random"], default="grouped",
                   help="grouped: one prompt never straddles folds (default); random: plain K-fold")
    f.add_argument("--nested", choices=["auto", "split", "cross", "full"], default=StackConfig.nested,
                   help="auto (default): full below --auto-cross-from items, cross up to --auto-full-below, split "
                        "above; split: tune on a held-apart share of the prompts (not scored); cross: split, then "
                        "swap the roles of the two shares (every item scored); full: tune inside every outer fold")
    f.add_argument("--auto-full-below", type=int, default=StackConfig.auto_full_below,
                   help="nested=auto: split from this many labelled items")
    f.add_argument("--auto-cross-from", type=int, default=StackConfig.auto_cross_from,
                   help="nested=auto: cross from this many labelled items (below --auto-full-below), full below")
    f.add_argument("--heads", default=",".join(StackConfig.heads), help="tuned heads on all blocks: svr,enet,lgbm")
    f.add_argument("--block-head", default=StackConfig.block_head, help="head per extractor block; 'none' for off")
    f.add_argument("--fixed-heads", default=",".join(StackConfig.fixed_heads),
                   help="untuned preset heads added to the stack (regressors.stacking.FIXED_PRESETS); '' for none")
    f.add_argument("--max-tune-items", type=int, default=StackConfig.max_tune_items)
    f.add_argument("--pca", type=int, default=StackConfig.pca, help="per-block PCA width (0: off)")
    f.add_argument("--no-select-blocks", action="store_true",
                   help="heads read every block (default: on the tuning set, untuned proxies may propose dropping "
                        "blocks, and a drop is made only when the tuned stack on the subset beats all blocks by "
                        f"{StackConfig.select_margin})")
    f.add_argument("--select-margin", type=float, default=StackConfig.select_margin,
                   help="how much better on the tuning set the tuned stack on the proxies' proposed block subset must "
                        "score than on all blocks for the drop to be made (docs/defaults.md)")
    f.add_argument("--meta-learner", choices=["positive", "mean", "best"], default=StackConfig.meta_learner,
                   help="how the heads are combined: positive (non-negative least squares, default), mean, best "
                        "(the one head that scores best out of fold)")
    f.add_argument("--final-tuning", choices=["reuse", "retune"], default=StackConfig.final_tuning,
                   help="split/cross: the final model reuses the first tuning (default) or is tuned once more on "
                        "all items (+0.0035 main on average on the panel, not significant; ~1.4x the fit time)")
    f.add_argument("--no-bound-scores", action="store_true",
                   help="do not bound the heads' and the stack's predictions to the training target range")
    f.add_argument("--generator-probe", action="store_true",
                   help="items whose generator is unknown (e.g. T2VQA-DB val/test) get generator probabilities "
                        "predicted from their content features")
    f.add_argument("--storage", default=None, help="Optuna storage: sqlite:///study.db or a journal file path")
    f.add_argument("--no-prune", action="store_true")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--jobs", type=int, default=StackConfig.n_jobs,
                   help="worker processes for tuning and refitting heads (-1: all cores, at most 8; 1: no workers)")
    f.add_argument("--engine", choices=["local", "ray"], default=StackConfig.engine,
                   help="ray: the searches and (fold, head) refits as Ray tasks (same results as local; "
                        "pip install 'aigc-quality[ray]'); studies shared through --storage")
    f.add_argument("--trial-workers", type=int, default=StackConfig.trial_workers,
                   help="with --engine ray and --storage: Ray tasks sharing each head's search (faster, but the "
                        "result depends on timing: parallel TPE trials are order-dependent; default 1: deterministic)")
    f.add_argument("--address", default=None,
                   help="with --engine ray: the cluster (auto, head:6379, ray://head:10001 with ray[client]; "
                        "default: a local one)")
    f.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads (default 1: multi-threaded OpenBLAS spins and runs ~30x slower on a busy, "
                        "oversubscribed machine; measured 6.5 s vs 0.2 s for one 116x3840 SVD at load 5 on 2 cores)")
    f.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    f.add_argument("--submit-split", default=None, help="unlabelled split written to OUT/submission (default test)")
    f.add_argument("--allow-incomplete", action="store_true",
                   help="fit and score the items whose features are done when some are failed or pending "
                        "(default: refuse, naming the key, counts and the command that fills it); a submission "
                        "is never written for an incomplete split")
    f.add_argument("--skip-media-check", action="store_true", help=MEDIA_HELP)
    p = sub.add_parser("predict", prog=progs.get("predict"), help="score a split of a store with a saved model")
    p.add_argument("--model", required=True, help="model bundle folder (or the run folder holding model/; aigcq "
                   "predict: default runs/<store name>-<target>/model)")
    p.add_argument("--store", required=True, help="HDF5 feature store (aigcq predict: or --data DATASET [--track])")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="output folder (aigcq predict: default <model's run folder>/predict)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--allow-incomplete", action="store_true",
                   help="score the done items of an incomplete split (no submission is written)")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="score the model's own training split (an in-sample fit, not a test score; no submission)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a legacy model.pkl (a pickle runs code when loaded: only files you produced)")
    p.add_argument("--skip-media-check", action="store_true", help=MEDIA_HELP)
    p.add_argument("--level", default=None, metavar="COVERAGE",
                   help="coverage of the prediction intervals score_lo..score_hi in predictions.csv (0.9 or 90%%; "
                        "default 90%%)")
    return ap


def main(argv: list[str] | None = None, prog: str | None = None, job_progs: dict[str, str] | None = None) -> int:
    args = _parser(prog or "python -m regressors", job_progs).parse_args(argv)
    from .bundle import BundleError
    from .data import IncompleteFeaturesError
    from .model_io import ModelChecksumError
    from .workflow import InSampleError, MissingFeaturesError, fit_command, predict_command

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
                nested=args.nested, auto_full_below=args.auto_full_below, auto_cross_from=args.auto_cross_from,
                pca=args.pca or None, protocol=args.protocol, seed=args.seed,
                storage=args.storage, prune=not args.no_prune, n_jobs=args.jobs, engine=args.engine,
                select_blocks=not args.no_select_blocks, select_margin=args.select_margin,
                meta_learner=args.meta_learner, final_tuning=args.final_tuning, bound_scores=not args.no_bound_scores,
                generator_probe=args.generator_probe,
                trial_workers=args.trial_workers)
            if args.trial_workers > 1 and (args.engine != "ray" or not args.storage):
                raise ValueError("--trial-workers needs --engine ray and --storage (a journal file or an RDB URL "
                                 "the workers share)")
            if args.engine == "ray":
                from .ray_tasks import import_ray

                import_ray()  # without ray: one line saying how to install it, before any work
                if args.address:
                    os.environ["RAY_ADDRESS"] = args.address  # ray.init() joins this cluster
            if os.path.isfile(args.store):  # TARGET may be the file's name of a mapped column (mos_quality -> mos)
                from features_store.api import resolve_target

                args.target, note = resolve_target(args.store, args.target)
                if note:
                    print(f"note: {note}", file=sys.stderr)
            if args.engine == "ray":
                from .ray_tasks import shared_storage

                cfg.storage = shared_storage(cfg.storage)  # the same file on every node, checked before any work
            if cfg.storage:
                from .tuning import create_storage

                create_storage(cfg.storage)  # an RDB's tables, before parallel searches race to make them
            exts = [e for e in args.extractors.split(",") if e.strip()] or None
            fit_command(args.track, args.store, exts, args.target, args.out, cfg, n_boot=args.bootstrap,
                        submit_split=args.submit_split, allow_incomplete=args.allow_incomplete,
                        media_check=not args.skip_media_check)
        else:
            from .conformal import parse_level

            predict_command(args.model, args.store, args.split, args.out, n_boot=args.bootstrap,
                            allow_incomplete=args.allow_incomplete, allow_in_sample=args.allow_in_sample,
                            trust_pickle=args.trust_pickle, media_check=not args.skip_media_check,
                            level=None if args.level is None else parse_level(args.level))
    except (MissingFeaturesError, ModelChecksumError, BundleError, IncompleteFeaturesError, InSampleError,
            FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0
