"""Issue 20's recipe through `make regress`: the default fit against `--no-select-blocks` on label tables.

For each seed: 1,000 items of 6 generators drawn from the AIGIQA-20K training labels by the recipe
(``panel_sets.recipe_rows``), written as a label table (name, prompt, mos) with the YAML table
adapter the issue gives (``columns: {item_id: name, prompt: prompt, mos: mos}``, ``generator_regex:
'^(?P<generator>.+)_\\d+\\.\\w+$'``), then exactly what a user types:

    make features TRACK=image DATA=<yaml> STORE=<store> EXTRACTORS=generator,prompt_minilm
    make regress  TRACK=image STORE=<store> EXTRACTORS=generator,prompt_minilm OUT=<run>/default
    make regress  ... OUT=<run>/all ARGS=--no-select-blocks

and prints main of each (metrics.json) and the paired difference with a 95% interval over prompts
(bootstrap of whole prompts on the out-of-fold predictions, predictions.csv). Library defaults
(12 trials per head). ``--checkout`` runs another checkout's code (e.g. an older commit unpacked
with ``git archive``) with this script's tables.

    nice -n 10 python benchmarks/recipe_regress.py --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

YAML = """adapter: table
labels: labels.csv
columns: {item_id: name, prompt: prompt, mos: mos}
generator_regex: '^(?P<generator>.+)_\\d+\\.\\w+$'
"""


def make(target: str, checkout: Path, **env) -> None:
    full = {**os.environ, "PYTHONPATH": str(checkout), "PY": sys.executable, "MPLBACKEND": "Agg", **env}
    proc = subprocess.run(["make", "-s", "-C", str(checkout), target], env=full, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"make {target} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def oof(run: Path):
    import pandas as pd

    df = pd.read_csv(run / "predictions.csv")
    return df[df["source"] == "cv_out_of_fold"].set_index("item_id")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--generators", type=int, default=6)
    ap.add_argument("--checkout", default=str(REPO), help="the project checkout whose code runs")
    ap.add_argument("--label", default=None, help="what --checkout is, for the JSON")
    ap.add_argument("--work", default=None, help="folder for tables, stores and runs (default: the panel cache)")
    ap.add_argument("--out", default=str(HERE / "results" / "recipe_regress.json"))
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    from panel import paired_bootstrap
    from panel_sets import CACHE, PanelSet, table_of

    from regressors.metrics import main_score

    checkout = Path(args.checkout).resolve()
    work = Path(args.work) if args.work else CACHE / "recipe"
    rows = []
    t_all = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        ps = PanelSet(f"aigiqa-{args.n}-g{args.generators}-s{seed}", "aigiqa20k", n=args.n, gens=args.generators,
                      seed=seed)
        folder = work / ps.name
        folder.mkdir(parents=True, exist_ok=True)
        table = table_of(ps)
        table.to_csv(folder / "labels.csv", index=False)
        (folder / "dataset.yaml").write_text(YAML)
        store = folder / "store.h5"
        if not store.is_file():
            make("features", checkout, TRACK="image", DATA=str(folder / "dataset.yaml"), STORE=str(store),
                 EXTRACTORS="generator,prompt_minilm")
        label = args.label or checkout.name
        runs = {}
        for name, extra in (("default", ""), ("all", "--no-select-blocks")):
            out = folder / f"runs-{label.replace('/', '_').replace(' ', '_')}" / name
            t0 = time.perf_counter()
            make("regress", checkout, TRACK="image", STORE=str(store), EXTRACTORS="generator,prompt_minilm",
                 OUT=str(out), ARGS=extra)
            runs[name] = (out, time.perf_counter() - t0)
        a, b = oof(runs["default"][0]), oof(runs["all"][0])
        common = a.index.intersection(b.index)
        prompts = dict(zip(table["name"], table["prompt"]))
        y = a.loc[common, "target"].to_numpy(float)
        pa, pb = a.loc[common, "prediction"].to_numpy(float), b.loc[common, "prediction"].to_numpy(float)
        g = np.array([prompts[i] for i in common])
        lo, hi = paired_bootstrap(pa, pb, y, g, args.n_boot, seed=0)
        m = {k: json.loads((runs[k][0] / "metrics.json").read_text()) for k in runs}
        row = {"seed": seed, "items": int(len(table)), "scored": int(len(common)),
               "default": m["default"]["main"], "all_blocks": m["all"]["main"],
               "difference": m["default"]["main"] - m["all"]["main"], "ci": [lo, hi],
               "check_default": main_score(pa, y), "check_all": main_score(pb, y),
               "kept": (m["default"].get("block_selection") or {}).get("kept"),
               "selection": m["default"].get("block_selection"),
               "seconds": {k: runs[k][1] for k in runs}, "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"seed {seed}: default {row['default']:.3f}  all blocks {row['all_blocks']:.3f}  difference "
              f"{row['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]  kept {row['kept']}  "
              f"({row['seconds']['default']:.0f} s, {row['seconds']['all']:.0f} s; load {row['load']:.1f})", flush=True)
    print("\n" + render({"rows": rows}))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit or args.label or "unknown",
            "renderer": "recipe_regress:render", "checkout": str(checkout),
            "label": args.label, "machine": os.uname().nodename, "cpu_count": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "command": " ".join(["python", *sys.argv]),
            "seconds": time.perf_counter() - t_all}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "summary": {}}, indent=1,
                              default=str) + "\n")
    print(f"wrote {out}")
    return 0


def render(doc: dict) -> str:
    """The recipe's table: main of the default and of ``--no-select-blocks`` per seed, their difference, and
    what block selection did (the docs' renderer, ``meta.renderer``)."""
    lines = ["| seed | items | default | all blocks (`--no-select-blocks`) | difference [95% CI] | blocks kept | "
             "proxies proposed → tuned stacks on the tuning set |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        sel = r.get("selection") or {}
        conf = sel.get("confirm")
        decided = (f"{' + '.join(sel.get('proposed') or [])}: all blocks {conf['all_blocks']:.3f}, proposed "
                   f"{conf['proposed']:.3f} → {conf['kept']}" if conf else "no drop proposed")
        lines.append(f"| {r['seed']} | {r['items']:,} | {r['default']:.3f} | {r['all_blocks']:.3f} | "
                     f"{r['difference']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | "
                     f"{' + '.join(r['kept'] or ['all'])} | {decided} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
