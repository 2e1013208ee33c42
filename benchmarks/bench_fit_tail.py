"""The fit's phases before/after a change: whole `aigcq regress` runs, back to back, same machine state.

Runs the same `regress` command with two checkouts of the project (``--before``: an
older commit unpacked somewhere, e.g. ``git archive <commit> | tar -x -C /tmp/before``;
``--after``: this one), alternating A B B A ... so that a change in the machine's load
hits both alike. Each run is a fresh process (as `make regress`); per run it prints the
wall time, the phases the run records in metrics.json (cross-validation, final fit,
pooled predictions where recorded, and the rest = everything after the final fit plus
loading), the score, and the load average. At the end: the after/before ratios of the
medians and whether both produced the same predictions (a speed change must not move
the score).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_fit_tail.py --store /tmp/fit/aigiqa.h5 \\
        --before /tmp/fit/before --extractors generator,prompt_minilm --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _results

REPO = Path(__file__).resolve().parents[1]


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one_run(checkout: Path, label: str, k: int, args) -> dict:
    out = Path(args.work) / f"{label}{k}"
    cmd = [sys.executable, "-m", "aigcq", "regress", "--track", args.track, "--store", args.store,
           "--extractors", args.extractors, "--out", str(out), *args.extra]
    env = {**os.environ, "PYTHONPATH": str(checkout), "MPLBACKEND": "Agg"}
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = load_avg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = json.loads((out / "metrics.json").read_text())
    t = m["timing"]
    row = {"label": label, "run": k, "wall_s": wall, "cv_s": t["cross_validation_s"], "final_fit_s": t["final_fit_s"],
           "predict_s": t.get("predict_s"),
           # everything the run did besides cross-validation and the final fit: loading, evaluation, saving the
           # bundle, predicting, writing reports (and the interpreter's start-up, outside total_s)
           "rest_s": wall - t["cross_validation_s"] - t["final_fit_s"],
           "cpu_s": (kids.ru_utime + kids.ru_stime) - (before_children.ru_utime + before_children.ru_stime),
           "main": m["main"], "heldout": {s: v.get("main") for s, v in m.get("heldout", {}).items()},
           "load_before": load0, "load_after": load_avg(), "out": str(out)}
    print(json.dumps(row), flush=True)
    return row


def same_predictions(a: str, b: str) -> dict:
    import pandas as pd

    pa, pb = pd.read_csv(Path(a) / "predictions.csv"), pd.read_csv(Path(b) / "predictions.csv")
    same_rows = pa[["item_id", "split", "source"]].equals(pb[["item_id", "split", "source"]])
    diff = float(np.max(np.abs(pa["prediction"].to_numpy() - pb["prediction"].to_numpy()))) if same_rows else None
    return {"same_rows": same_rows, "max_abs_prediction_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--before", required=True, help="checkout of the commit to compare against")
    ap.add_argument("--after", default=str(REPO), help="checkout with the change (default: this one)")
    ap.add_argument("--track", default="image")
    ap.add_argument("--extractors", default="generator,prompt_minilm")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each (A B, then B A, ...)")
    ap.add_argument("--work", default="/tmp/bench_fit_tail")
    ap.add_argument("--out", default=None, help="write all rows and ratios as JSON here")
    ap.add_argument("extra", nargs="*", help="more regress options after --, e.g. -- --trials 4")
    args = ap.parse_args()
    print(f"load average at start: {load_avg()} on {os.cpu_count()} cores", flush=True)
    rows = []
    for k in range(args.repeats):
        pair = [("before", Path(args.before)), ("after", Path(args.after))]
        for label, checkout in (pair if k % 2 == 0 else pair[::-1]):
            rows.append(one_run(checkout, label, k, args))
    med = {lab: {key: float(np.median([r[key] for r in rows if r["label"] == lab]))
                 for key in ("wall_s", "cv_s", "final_fit_s", "rest_s", "cpu_s", "main")}
           for lab in ("before", "after")}
    summary = {"median": med,
               "ratio_after_over_before": {key: med["after"][key] / med["before"][key]
                                           for key in ("wall_s", "rest_s", "cpu_s") if med["before"][key]},
               "predictions": same_predictions(rows[0]["out"], next(r["out"] for r in rows if r["label"] == "after")),
               "load_end": load_avg()}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    _results.write("fit_tail", [{"checkout": r["label"], "run": r["run"], "wall s": round(r["wall_s"], 1),
                                 "CV s": round(r["cv_s"], 1), "final fit s": round(r["final_fit_s"], 1),
                                 "rest s": round(r["rest_s"], 1), "CPU s": round(r["cpu_s"], 1),
                                 "main": round(r["main"], 4), "load before": r["load_before"][0]} for r in rows],
                   {"after / before wall": round(summary["ratio_after_over_before"].get("wall_s", float("nan")), 2),
                    "after / before CPU": round(summary["ratio_after_over_before"].get("cpu_s", float("nan")), 2),
                    "max prediction difference": summary["predictions"]["max_abs_prediction_diff"],
                    "before": args.before, "store": args.store, "extractors": args.extractors})


if __name__ == "__main__":
    main()
