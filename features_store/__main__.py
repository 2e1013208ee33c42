"""``python -m features_store describe|validate|info|errors|merge``."""
from __future__ import annotations

import argparse
import json
import sys

from .cliargs import add_dataset_arguments  # light: `--help` imports no pandas


def _describe(args) -> int:
    from .adapters import dataset_from_args

    m = dataset_from_args(args)
    out = m.summary()
    problems = m.problems(check_media=False)
    media = m.df["path"].map(lambda p: bool(p) and (__import__("os").path.isfile(m.abspath(p))))
    out["media_present"] = int(media.sum())
    # every problem and warning by name ("problems: 1" alone sent users hunting)
    out["warnings"] = list(m.notes)
    out["problem_count"] = len(problems)
    out["label_problems"] = m.label_problems()
    out["problems"] = [str(p) for p in problems[:DESCRIBE_LIMIT]]
    if len(problems) > DESCRIBE_LIMIT:
        out["problems"].append(f"... and {len(problems) - DESCRIBE_LIMIT} more: `aigcq validate DATA --report f.csv` "
                               "lists all")
    print(json.dumps(out, indent=2))
    for note in m.notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


#: problems named in `describe` (all of them are in `validate --report`)
DESCRIBE_LIMIT = 100


def _validate(args) -> int:
    from .adapters import dataset_from_args
    from .manifest import problems_frame

    m = dataset_from_args(args)
    for note in m.notes:
        print(f"warning: {note}", file=sys.stderr)
    problems = m.problems(check_media=not args.no_media)
    if args.report:
        problems_frame(problems).to_csv(args.report, index=False)
    for p in problems[: args.limit]:
        print(p)
    if len(problems) > args.limit:
        print(f"... and {len(problems) - args.limit} more" + (f" (all in {args.report})" if args.report else ""))
    labels = m.label_problems()  # columns no model could be fitted to as the target (`aigcq regress` refuses them)
    for line in labels:
        print(line)
    print(f"{m.name}: {len(m)} items, {len(problems)} problem(s)"
          + (f", {len(labels)} label column problem(s)" if labels else ""))
    return 1 if problems or labels else 0


def _info(args) -> int:
    from .store import FeatureStore

    with FeatureStore(args.store, mode="r") as st:
        info = st.info()
        if args.verbose:
            for k in st.keys():
                info["keys"][k]["identity"] = st.config(k)["identity"]
    print(json.dumps(info, indent=2, default=str))
    return 0


def _errors(args) -> int:
    from .api import resolve_keys
    from .store import FeatureStore

    with FeatureStore(args.store, mode="r") as st:
        key = resolve_keys(st, [args.key])[0]
        errs = st.errors(key)
    if args.csv:
        errs.to_csv(sys.stdout, index=False)
    else:
        for r in errs.itertuples():
            print(f"{r.item_id}\t{r.error}")
        print(f"{key}: {len(errs)} failed item(s)", file=sys.stderr)
    return 0


def _merge(args) -> int:
    from .merge import merge

    print(json.dumps(merge(args.out, args.shards, allow_partial=args.allow_partial), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m features_store", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("describe", help="items, labels, splits, generators of a dataset (JSON)")
    add_dataset_arguments(p)
    p.set_defaults(func=_describe)
    p = sub.add_parser("validate", help="list invalid items (exit 1 if any)")
    add_dataset_arguments(p)
    p.add_argument("--no-media", action="store_true", help="do not check that media files exist")
    p.add_argument("--report", help="write every problem to this CSV")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_validate)
    p = sub.add_parser("info", help="keys, dims, done/failed counts of a store")
    p.add_argument("store")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each key's identity")
    p.set_defaults(func=_info)
    p = sub.add_parser("errors", help="failed items of one key, with reasons")
    p.add_argument("store")
    p.add_argument("key", help="store key, or extractor name with one configuration")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=_errors)
    p = sub.add_parser("merge", help="combine shard stores into one")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    p.add_argument("--allow-partial", action="store_true", help="merge even if some shards are missing")
    p.set_defaults(func=_merge)
    # `describe <dataset>` reads naturally; --data stays accepted
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("describe", "validate") and len(argv) > 1 and not argv[1].startswith("-"):
        argv = [argv[0], "--data", argv[1], *argv[2:]]
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:  # ManifestError is a ValueError
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from .console import run_main

    sys.exit(run_main(main))
