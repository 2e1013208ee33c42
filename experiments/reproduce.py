"""``make reproduce``: official download -> features -> tuned, stacked heads -> submission files.

    python -m experiments.reproduce --track image --data /data/AIGIQA-20K --device cuda --recipe best_image

Steps, all resumable (the store keeps every finished item; rerunning skips them):

1. load the dataset (adapter detected) and validate it;
2. compute every feature of the recipe into the store (``--shard k/N`` computes every
   N-th item into ``<store>.shard-k-of-N.h5`` and stops: merge the N files with
   ``python -m features_store merge <store> <shards...>``, then rerun without --shard,
   adding ``--fit-only`` if this machine's device/precision differ from the shards');
3. tune, cross-validate (nested, grouped by prompt) and fit on the training split, then
   write ``submission/`` (test) and ``submission_val/`` (val) with ``output.txt`` +
   ``readme.txt``, zipped beside them.

A recipe that needs weights stops at the first extractor whose weights are missing,
with the extractor's own message (which names the hub id or file and how to provide
it); features computed before that point stay in the store.
"""
from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

EXIT_NO_WEIGHTS = 3


def _drop_unknown_generator(recipe, manifest) -> list:
    """T2VQA-DB val/test do not name the generator: a ``generator`` block would be 'unknown'
    for every item scored there, so it is left out (with a message) instead of misleading."""
    from .recipes import spec_name

    df = manifest.df
    unlabelled = df[df["mos"].isna()]
    specs = list(recipe.extractors)
    if len(unlabelled) and unlabelled["generator"].isna().all() and "generator" in [spec_name(s) for s in specs]:
        print("note: no generator is known for the unlabelled splits (val/test); leaving `generator` out of the model")
        specs = [s for s in specs if spec_name(s) != "generator"]
    return specs


def _zip(folder: Path) -> Path:
    z = folder.with_suffix(".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("output.txt", "readme.txt"):
            if (folder / name).is_file():
                zf.write(folder / name, arcname=name)
    return z


def compute_features(manifest, specs, track: str, store: Path, *, device: str, precision: str, batch_size: int,
                     workers: int | None, shard) -> list[str]:
    """Run every extractor; returns the store keys. Raises WeightsNotFoundError unchanged."""
    from extractors.registry import for_track
    from extractors.runner import run_extraction
    from features_store import FeatureStore

    from .recipes import OFFLINE, spec_name

    extractors = [for_track(s, track) for s in specs]  # unknown names / options fail before any work
    # offline extractors first: they need no weights, so a missing checkpoint stops the run after them
    order = sorted(range(len(specs)), key=lambda i: spec_name(specs[i]) not in OFFLINE)
    extractors = [extractors[i] for i in order]
    keys = []
    with FeatureStore(store, mode="a") as st:
        for ex in extractors:
            s = run_extraction(manifest, ex, st, device=device, precision=precision, batch_size=batch_size,
                               workers=workers, shard=shard)
            print(s.line(), flush=True)
            for iid, msg in s.failures[:10]:
                print(f"  failed {iid}: {msg}")
            keys.append(s.key)
    return keys


def main(argv: list[str] | None = None) -> int:
    from .recipes import load

    ap = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--track", required=True, choices=("image", "video"))
    ap.add_argument("--data", required=True, help="official AIGIQA-20K / T2VQA-DB folder (or any dataset/YAML)")
    ap.add_argument("--recipe", default=None, help="recipe name or YAML (default: best_<track>)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--store", default=None, help="feature store (default: stores/<dataset>-<track>-<dataset id>.h5)")
    ap.add_argument("--out", default=None, help="run folder (default: runs/reproduce-<dataset>-<track>-<recipe>)")
    ap.add_argument("--shard", default=None, help="k/N: compute features for every N-th item only, then stop")
    ap.add_argument("--fit-only", action="store_true",
                    help="skip extraction: find the recipe's features in the store (e.g. after merging shards "
                         "computed elsewhere, whose precision/device differ from this machine's)")
    ap.add_argument("--on-invalid", default="stop", choices=("stop", "skip"))
    ap.add_argument("--trials", type=int, default=None, help="override the recipe's Optuna trials per head")
    ap.add_argument("--jobs", type=int, default=-1, help="worker processes for the heads (-1: all cores, at most 8)")
    args = ap.parse_args(argv)

    from extractors.base import WeightsNotFoundError
    from extractors.runner import parse_shard, shard_path
    from features_store import load_dataset

    recipe = load(args.recipe or f"best_{args.track}")
    recipe.check_track(args.track)
    t0 = time.perf_counter()
    manifest = load_dataset(args.data)
    manifest, problems = manifest.validate(args.on_invalid, check_media=False)
    for p in problems[:10]:
        print(f"skipped {p}", file=sys.stderr)
    print(f"recipe {recipe.summary()}")
    print(f"dataset {manifest.name}: {manifest.summary()['splits']} items per split")
    specs = _drop_unknown_generator(recipe, manifest)
    out = Path(args.out or f"runs/reproduce-{manifest.name}-{args.track}-{recipe.name}")
    from regressors.rundir import RunFolderError, check_replaceable

    try:  # before hours of features: the run folder must be new, empty or one aigcq wrote
        check_replaceable(out)
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.store:
        base_store = Path(args.store)
    else:  # the dataset-identifying default every entry point uses (features_store.naming)
        from features_store.naming import find_default_store

        base_store, note = find_default_store(manifest, args.track)
        if note:
            print(f"note: {note}", file=sys.stderr)
    store = base_store
    shard = parse_shard(args.shard)
    if shard is not None:
        store = shard_path(store, shard)
    store.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.fit_only:
            from .recipes import store_key

            if shard is not None:
                raise SystemExit("--fit-only and --shard exclude each other")
            keys = [store_key(store, s, args.track) for s in specs]
            print(f"using stored features: {', '.join(keys)}")
        else:
            keys = compute_features(manifest, specs, args.track, store, device=args.device,
                                    precision=args.precision, batch_size=args.batch_size, workers=args.workers,
                                    shard=shard)
    except WeightsNotFoundError as err:
        print(f"\nstopped: recipe {recipe.name!r} needs weights that are not on this machine.\n{err}\n"
              f"Features finished so far are kept in {store}; rerun the same command once the weights are there.",
              file=sys.stderr)
        return EXIT_NO_WEIGHTS
    t_feat = time.perf_counter() - t0
    if shard is not None:
        k, n = shard
        shards = " ".join(str(shard_path(base_store, (i, n))) for i in range(n))
        print(f"\nshard {k}/{n} done in {t_feat:.0f} s -> {store}.\nWhen all {n} shards are done:\n"
              f"  python -m features_store merge {base_store} {shards}\n"
              "then rerun this command without --shard (computed features are reused).")
        return 0

    from regressors.stacking import StackConfig
    from regressors.workflow import fit_command

    cfg = StackConfig(heads=tuple(recipe.heads), n_trials=recipe.trials if args.trials is None else args.trials,
                      block_head="svr" if recipe.stack else None, outer_folds=recipe.folds,
                      protocol=recipe.protocol, seed=recipe.seed, n_jobs=args.jobs)
    from regressors.data import IncompleteFeaturesError

    try:
        metrics = fit_command(args.track, str(store), keys, recipe.target, str(out), cfg)
    except (IncompleteFeaturesError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    zips = [str(_zip(Path(s["folder"]))) for s in metrics.get("submissions", {}).values() if "folder" in s]
    from regressors.rundir import record_files

    record_files(out, zips)  # written by this run: a later run may replace them
    print(f"\nfeatures {t_feat:.0f} s, regression {metrics.get('timing', {}).get('total_s', float('nan')):.0f} s")
    print(f"cross-validated main {metrics.get('main', float('nan')):.4f}; report {out / 'report.md'}")
    for z in zips:
        print(f"submission: {z}")
    return 0


if __name__ == "__main__":
    from features_store.console import run_main

    sys.exit(run_main(main))
