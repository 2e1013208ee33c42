"""``aigcq``: one command for every job (the Makefile's targets call it).

Each job but ``score`` hands its arguments to the module command that implements it
(``python -m extractors run``, ``python -m regressors fit`` ...), so every flag those
accept, now or later, works here too: ``aigcq <job> --help`` lists them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


class JobError(Exception):
    """A job that cannot start (printed as one line, exit status 2)."""


#: job -> (one-line help, how to run it with the remaining arguments)
JOBS: dict[str, tuple[str, Callable[[list[str]], int]]] = {}


def job(name: str, help: str):
    def register(fn):
        JOBS[name] = (help, fn)
        return fn
    return register


def default_store(data: str, track: str) -> str:
    """The store a dataset's features go to when no --store is given (one rule for every job).

    ``features_store.naming.default_store_path`` (which identifies the dataset) once it exists;
    until then ``stores/<folder or file name>-<track>.h5``, the Makefile's earlier rule.
    """
    try:
        from features_store import naming
    except ImportError:
        return str(Path("stores") / f"{Path(str(data).rstrip('/')).stem}-{track}.h5")
    from features_store import load_dataset

    try:
        manifest = load_dataset(data)
    except (OSError, ValueError) as err:  # the job cannot start without its store: one line, no traceback
        raise JobError(f"--data {data}: {err}") from None
    if hasattr(naming, "find_default_store"):  # also finds a store made under the earlier name
        path, note = naming.find_default_store(manifest, track)
        if note:
            print(f"note: {note}", file=sys.stderr)
        return str(path)
    return str(naming.default_store_path(manifest, track))


def _store_options(argv: list[str]):
    """(the options read here, every other argument unchanged): --data, --store, --track, --target, --out, --model."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for opt in ("--data", "--store", "--track", "--target", "--out", "--model"):
        ap.add_argument(opt)
    return ap.parse_known_args(argv)


def _resolve(argv: list[str], job: str) -> list[str]:
    """Fill --store from --data (+ --track), and --out / --model from the store and --target.

    Only the options above are read; every other argument passes through unchanged, so flags
    the module commands add later work without touching this file.
    """
    if {"-h", "--help"} & set(argv):
        return argv
    k, rest = _store_options(argv)
    store = k.store or (default_store(k.data, k.track or "image") if k.data else None)
    if not k.store and store and job in ("regress", "ablate") and not Path(store).exists():
        # a newcomer's second command: name the one that makes the store, not just the missing file
        raise JobError(f"no features yet for --data {k.data} (track {k.track or 'image'}): {store} does not exist; "
                       f"compute them first: aigcq features --data {k.data} --track {k.track or 'image'} "
                       f"--extractors <names> (aigcq list shows them)")
    run = f"runs/{Path(store).stem}-{k.target or 'mos'}" if store else None
    args = [*rest, *(["--store", store] if store else [])]
    if job == "predict":  # regressors predict reads the track and target from the model bundle
        model = k.model or (f"{run}/model" if run else None)
        args += ["--model", model] if model else []
        args += ["--out", k.out or f"{Path(model).parent}/predict"] if (k.out or model) else []
        return args
    track = k.track or ("image" if k.data and not k.store else None)  # the track the store name was made for
    args += ["--track", track] if track else []
    args += ["--target", k.target] if k.target else []
    out = k.out or (run if job == "regress" else f"{run}/ablation") if run else k.out
    return args + (["--out", out] if out else [])


def _with_default_store(argv: list[str]) -> list[str]:
    """--store from --data and --track when not given (features, reproduce)."""
    if "--store" in argv or "--data" not in argv or {"-h", "--help"} & set(argv):
        return argv
    k, _ = _store_options(argv)
    return [*argv, "--store", default_store(k.data, k.track or "image")]


def _features_store(cmd: str, argv: list[str]) -> int:
    from features_store.__main__ import main

    return main([cmd, *argv])


@job("describe", "items, labels, splits, generators of a dataset (JSON): aigcq describe DATA")
def _describe(argv):
    return _features_store("describe", argv)


@job("validate", "list invalid items of a dataset (exit 1 if any): aigcq validate DATA")
def _validate(argv):
    return _features_store("validate", argv)


@job("features", "extract features into the store (python -m extractors run)")
def _features(argv):
    from extractors.__main__ import main

    # no --store added here: `extractors run` picks the same default (features_store.naming) from
    # the manifest it loads anyway; resolving it here loaded the dataset twice per run
    return main(["run", *argv])


@job("list", "extractor names, kinds, output sizes, needs")
def _list(argv):
    from extractors.__main__ import main

    return main(["list", *argv])


@job("merge", "combine shard stores into one: aigcq merge OUT SHARD...")
def _merge(argv):
    return _features_store("merge", argv)


@job("info", "keys, dims, done/failed counts of a store")
def _info(argv):
    return _features_store("info", argv)


@job("errors", "failed items of one store key, with reasons")
def _errors(argv):
    return _features_store("errors", argv)


REGRESSORS_PROGS = {"fit": "aigcq regress", "predict": "aigcq predict"}  # usage lines name the aigcq job


@job("regress", "tune, cross-validate and fit the stacked model; writes a model bundle (python -m regressors fit)")
def _regress(argv):
    from regressors.cli import main

    return main(["fit", *_resolve(argv, "regress")], prog="aigcq", job_progs=REGRESSORS_PROGS)


@job("predict", "score a split of a store with a model bundle (python -m regressors predict)")
def _predict(argv):
    from regressors.cli import main

    return main(["predict", *_resolve(argv, "predict")], prog="aigcq", job_progs=REGRESSORS_PROGS)


@job("score", "score image/video files, folders or lists with a model bundle: aigcq score MODEL INPUT...")
def _score(argv):
    from .score import main

    return main(argv)


@job("bundle", "verify a model bundle, or relabel / upgrade it the documented way: aigcq bundle verify MODEL")
def _bundle(argv):
    from .bundle_cmd import main

    return main(argv)


@job("ablate", "every extractor alone / all minus each, on the same folds (python -m experiments.ablate)")
def _ablate(argv):
    from experiments.ablate_args import parser

    argv = _resolve(argv, "ablate")
    parser().parse_args(argv)  # --help and argument errors before numpy and pandas load
    from experiments.ablate import main

    return main(argv)


@job("reproduce", "official download -> features -> tuned stack -> submission (python -m experiments.reproduce)")
def _reproduce(argv):
    from experiments.reproduce import main

    return main(_with_default_store(argv))


@job("demo", "offline end-to-end run on an embedded dataset, ending with `aigcq score` (python -m experiments.demo)")
def _demo(argv):
    from experiments.demo import main

    return main(argv)


def usage() -> str:
    width = max(len(n) for n in JOBS)
    lines = ["usage: aigcq <job> [arguments]   (aigcq <job> --help for its options)", "",
             "Predict how people rate AI-generated images and videos: frozen features, tuned heads, a portable model.",
             "", "jobs:"]
    lines += [f"  {n.ljust(width)}  {h}" for n, (h, _) in JOBS.items()]
    lines += ["", "options:", "  -h, --help     this message", "  --version      the installed version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The ``aigcq`` command (its exit status); ``aigcq ... | head`` ends quietly, a missing optional
    package is one line naming its extra (features_store.console)."""
    from features_store.console import run_main

    return run_main(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"aigcq {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        from extractors.base import suggest

        print(f"aigcq: unknown job {name!r}.{suggest(name, list(JOBS))}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        rc = JOBS[name][1](rest)
    except JobError as err:
        print(f"aigcq {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
