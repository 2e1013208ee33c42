"""The time price of a fit default: the same fit with two checkouts' code, alternated in one run.

Issue 20 caps the default AIGIQA-20K label-only fit (generator + prompt_minilm, 14,000 training
items, library defaults: 12 trials per tuned head, 2 worker processes) at 1.2x the time it took
before block selection was made to ask the tuned heads. This runs that fit (the honest nested
cross-validation ``aigcq regress`` reports, on the panel's cached features) with the code of
``--before`` and of ``--after`` (checkouts, e.g. ``git archive <commit> | tar -x -C DIR``),
alternating A B B A ... so that load drifts hit both alike, each in its own process, and writes
wall and CPU seconds per fit and the ratio of the medians.

    git archive 388ee31 | (mkdir -p /tmp/before && tar -x -C /tmp/before)
    nice -n 10 python benchmarks/bench_fit_time.py --before /tmp/before --after . --reps 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])
from threadpoolctl import threadpool_limits
from panel_sets import SETS, load_set
from regressors.stacking import StackConfig, cross_validate
data = load_set(next(s for s in SETS if s.name == sys.argv[3]))
cfg = StackConfig(n_trials=int(sys.argv[4]))
t0 = time.perf_counter()
with threadpool_limits(1, user_api="blas"):
    cv = cross_validate(data.X, data.y, data.groups, data.blocks, cfg)
wall = time.perf_counter() - t0
from joblib.externals.loky import get_reusable_executor
get_reusable_executor().shutdown(wait=True)  # reap the workers: their CPU time then counts in RUSAGE_CHILDREN
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
from regressors.metrics import main_score
import regressors
print(json.dumps({"code": os.path.dirname(os.path.dirname(os.path.abspath(regressors.__file__))), "wall_s": wall, "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                  "main": main_score(cv["stack"], data.y[cv["scored"]]), "n_scored": len(cv["scored"])}))
"""


def one_fit(code: Path, set_name: str, trials: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(HERE)])}
    p = subprocess.run([sys.executable, "-c", CHILD, str(code), str(HERE), set_name, str(trials)], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"fit with {code} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if Path(out.pop("code")).resolve() != code:  # a ratio of one code against itself would pass any cap
        raise SystemExit(f"the fit meant to run {code} imported regressors from elsewhere")
    out["load"] = round(os.getloadavg()[0], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="checkout with the old defaults' code")
    ap.add_argument("--after", default=str(HERE.parent), help="checkout with the new code (default: this one)")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--after-label", default="after")
    ap.add_argument("--set", default="aigiqa-full", help="a panel set (benchmarks/panel.py --list)")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    codes = {args.before_label: Path(args.before).resolve(), args.after_label: Path(args.after).resolve()}
    for label, code in codes.items():
        if not (code / "regressors" / "__init__.py").is_file():  # else the child imports another checkout's code
            raise SystemExit(f"--{'before' if label == args.before_label else 'after'} {code}: no regressors package "
                             f"there (a checkout's root, e.g. one unpacked with git archive)")
    rows = []
    for rep in range(args.reps):
        order = list(codes) if rep % 2 == 0 else list(codes)[::-1]
        for label in order:
            r = {"rep": rep, "code": label, **one_fit(codes[label], args.set, args.trials)}
            print(json.dumps(r), flush=True)
            rows.append(r)
    med = {c: statistics.median(r["wall_s"] for r in rows if r["code"] == c) for c in codes}
    cpu = {c: statistics.median(r["cpu_s"] for r in rows if r["code"] == c) for c in codes}
    summary = {"set": args.set, "trials": args.trials, "reps": args.reps,
               "median_wall_s": med, "median_cpu_s": cpu,
               "wall_ratio_after_over_before": med[args.after_label] / med[args.before_label],
               "cpu_ratio_after_over_before": cpu[args.after_label] / cpu[args.before_label]}
    print(json.dumps(summary, indent=1))
    _results.write("fit_time", rows, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
