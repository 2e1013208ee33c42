"""``aigcq bundle verify|relabel|upgrade BUNDLE``: check a model bundle, or change it the one documented way.

A bundle is refused when loaded if anything in it was edited by hand (regressors.bundle_integrity):
``relabel`` is how its target or generators are renamed (the model's heads and scores stay exactly
as they were: a generator keeps its one-hot position under its new name), and ``upgrade`` records
what the heads depend on in a bundle written before aigcq recorded it. Exit status 2 with one line
when the bundle is refused.
"""
from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aigcq bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check the manifest, the model record and every extractor option; load nothing else")
    v.add_argument("bundle")
    r = sub.add_parser("relabel", help="rename the target or generators (scores unchanged), re-sealing the bundle")
    r.add_argument("bundle")
    r.add_argument("--target-name", default=None, help="new name of the predicted target")
    r.add_argument("--generator", action="append", default=[], metavar="OLD=NEW",
                   help="rename a generator the model knows (repeatable); it keeps its position in the one-hot block")
    u = sub.add_parser("upgrade", help="record what the heads depend on in a bundle written before aigcq did "
                                       "(only for a bundle you made or trust: its bundle.json is taken as it is)")
    u.add_argument("bundle")
    return ap


def _pairs(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        old, eq, new = spec.partition("=")
        if not (eq and old and new):
            raise ValueError(f"--generator {spec!r}: expected OLD=NEW")
        out[old] = new
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from regressors import bundle_edit
    from regressors.bundle import BundleError, is_bundle

    from pathlib import Path

    folder = Path(args.bundle)
    if not is_bundle(folder) and is_bundle(folder / "model"):  # a run folder: its bundle
        folder = folder / "model"
    try:
        if args.command == "verify":
            from .predictor import Predictor

            p = Predictor.load(folder, progress=False)  # manifest, model record, every extractor option
            print(f"ok: {folder}: {len(p.info['files'])} file(s) as sealed; bundle.json agrees with the model's record "
                  f"({', '.join(p.kept)})")
        elif args.command == "relabel":
            generators = _pairs(args.generator)
            if args.target_name is None and not generators:
                raise ValueError("nothing to relabel: give --target-name and/or --generator OLD=NEW")
            meta = bundle_edit.relabel(folder, args.target_name, generators)
            print(f"relabelled {folder}: target {meta['target']['name']!r}"
                  + (f", generators {', '.join(meta.get('generator_vocabulary') or [])}" if generators else "")
                  + "; re-sealed")
        else:
            bundle_edit.upgrade(folder)
            print(f"upgraded {folder}: the model now records what its heads depend on; bundle.json sealed")
    except (BundleError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
