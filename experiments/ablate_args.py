"""The arguments of ``python -m experiments.ablate`` / ``aigcq ablate``, in a module that imports
nothing heavy: ``--help`` and argument errors come back without loading numpy or pandas."""
from __future__ import annotations

import argparse

DESCRIPTION = "Ablations: every extractor alone, all together, and all minus each one."


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m experiments.ablate", description=DESCRIPTION)
    ap.add_argument("--track", choices=("image", "video"), default=None)
    ap.add_argument("--store", required=True, help="feature store (.h5) holding the extractors' features (aigcq ablate: or "
                    "--data DATASET [--track])")
    ap.add_argument("--target", default=None, help="label column (default: the recipe's, else mos)")
    ap.add_argument("--out", required=True, help="output folder (the tuned-parameter cache lives there too; aigcq ablate: "
                    "default runs/<store name>-<target>/ablation)")
    ap.add_argument("--recipe", default=None, help="recipe name or YAML path (default: --extractors)")
    ap.add_argument("--extractors", default=None, help="comma-separated extractor specs (when no recipe)")
    ap.add_argument("--head", default="svr", choices=("svr", "enet", "lgbm"))
    ap.add_argument("--trials", type=int, default=10, help="Optuna trials per outer fold (0: default parameters)")
    ap.add_argument("--folds", type=int, default=None, help="outer folds (default: the recipe's, else 5)")
    ap.add_argument("--inner-folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--protocol", choices=("grouped", "random"), default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--split", default="train")
    ap.add_argument("--no-select-blocks", action="store_true",
                    help="every row reads all its blocks (default: nested block selection per outer fold, as the stack)")
    ap.add_argument("--jobs", type=int, default=-1, help="worker processes (default -1: all cores, at most 8)")
    return ap
