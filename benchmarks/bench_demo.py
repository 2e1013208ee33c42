"""`make demo` as a user runs it: wall time per step, the cross-validated score, the held-out SRCC.

    python benchmarks/bench_demo.py [--out runs/demo]

Runs ``python -m aigcq demo --out OUT`` in a fresh process (OUT defaults to an empty temporary
folder, so nothing is reused: the dataset, the features and the fit are all computed, as on a fresh
clone with its environment installed), then reads what the demo wrote: the step times it prints,
``regress/metrics.json`` (main, SRCC, PLCC with their bootstrap intervals) and the blocks the model
reads (``regress/model/bundle.json``: ``kept_blocks``), and the SRCC of the held-out images' scores
with their synthetic labels. The labels are SYNTHETIC: these numbers show that the pipeline runs.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="demo run folder (default: a fresh temporary folder, removed after)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_demo_")) / "demo"
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "aigcq", "demo", "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"aigcq demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        steps = dict(re.findall(r"(\w+) (\d+) s", next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("time: "))))
        heldout = re.search(r"SRCC with the synthetic labels ([-\d.]+) on (\d+) images", proc.stdout)
        m = json.loads((out / "regress" / "metrics.json").read_text())
        bundle = json.loads((out / "regress" / "model" / "bundle.json").read_text())
        kept = bundle.get("kept_blocks") or [f["block"] for f in bundle["features"]]
        ci = m.get("ci", {})
        fmt = lambda k: f"{m[k]:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")  # noqa: E731
        rows = [{"step": k, "seconds": int(v)} for k, v in steps.items() if k != "total"]
        rows.append({"step": "whole `aigcq demo` process", "seconds": round(wall)})
        summary = {"cross-validated SRCC": fmt("srcc"), "PLCC": fmt("plcc"), "main": fmt("main"),
                   "items scored": m.get("n"), "blocks the model reads": ", ".join(kept),
                   "held-out SRCC with the synthetic labels": (f"{float(heldout.group(1)):.3f} on {heldout.group(2)} images"
                                                               if heldout else None)}
        print(json.dumps({"rows": rows, "summary": summary}, indent=1))
        _results.write("demo", rows, summary)
    finally:
        if not args.out:
            shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
