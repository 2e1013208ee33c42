"""Chaos check: random ``kill -9`` over features (sharded and not), merge, regress and predict on the
demo data; the final store, predictions and submissions must equal an undisturbed run.

    python benchmarks/chaos.py --kills 15 [--seed 0] [--out runs/chaos]

1. builds a small demo dataset (experiments.demo_data: synthetic labels, a "test" split);
2. runs the pipeline once undisturbed (``ref/``), timing each step;
3. runs it again (``chaos/``) where N kills are spread at random over the steps: each kill
   starts the step's command and ``kill -9``s it after a random time within the step's
   undisturbed duration (or within the last attempt's, when that one ended before its kill: a
   step already complete is then killed during its rerun, which exercises cached reruns and
   run-folder replacement); after its kills each step runs to completion;
   after every kill the store files must open;
4. compares: every key of the store (values bit for bit, status, errors, item order, batch sizes),
   predictions.csv and the submission files of the fit and of ``predict`` (readme files hold
   timings and are left out).

Exit status 0 when everything is equal. The steps are the real command lines (``python -m
extractors run`` / ``features_store merge`` / ``regressors fit`` / ``regressors predict``).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARDED = "nss,generator"  # computed in two shards, then merged
WHOLE = "nss,prompt_minilm,generator"  # then every key on the merged store (nss cached, the rest computed)


def steps(py: str, data: Path, work: Path) -> list[tuple[str, list[str]]]:
    store = work / "demo.h5"
    shard = [work / f"demo.shard-{k}-of-2.h5" for k in (0, 1)]
    feat = [py, "-m", "extractors", "run", "--track", "image", "--data", str(data), "--workers", "0",
            "--batch-size", "8", "--no-progress", "--checkpoint-every", "1", "--threads", "1"]
    fit = [py, "-m", "regressors", "fit", "--track", "image", "--store", str(store), "--extractors", WHOLE,
           "--out", str(work / "run"), "--trials", "2", "--folds", "3", "--tune-folds", "2", "--heads", "svr,enet",
           "--bootstrap", "50", "--jobs", "1", "--seed", "0"]
    return [
        ("features shard 0/2", [*feat, "--extractors", SHARDED, "--store", str(store), "--shard", "0/2"]),
        ("features shard 1/2", [*feat, "--extractors", SHARDED, "--store", str(store), "--shard", "1/2"]),
        ("merge", [py, "-m", "features_store", "merge", str(store), *map(str, shard)]),
        ("features", [*feat, "--extractors", WHOLE, "--store", str(store)]),
        ("regress", fit),
        ("predict", [py, "-m", "regressors", "predict", "--model", str(work / "run"), "--store", str(store),
                     "--split", "test", "--out", str(work / "predict"), "--bootstrap", "50"]),
    ]


def run_to_end(name: str, cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"chaos: step {name!r} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def kill_during(cmd: list[str], env: dict, after_s: float) -> tuple[bool, float]:
    """Start ``cmd``, SIGKILL it after ``after_s``: (whether it was still running, seconds it ran)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after_s)
        return False, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True, after_s


def stores_open(work: Path) -> None:
    from features_store import FeatureStore

    for p in sorted(work.glob("*.h5")):
        with FeatureStore(p, "r") as st:
            for k in st.keys():
                st.counts(k)


def compare(ref: Path, got: Path) -> list[str]:
    from features_store import FeatureStore

    diffs = []
    with FeatureStore(ref / "demo.h5", "r") as a, FeatureStore(got / "demo.h5", "r") as b:
        if a.keys() != b.keys():
            diffs.append(f"store keys {a.keys()} != {b.keys()}")
        if list(a.item_ids()) != list(b.item_ids()):
            diffs.append("store item order differs")
        for k in set(a.keys()) & set(b.keys()):
            va, vb = a.read(k), b.read(k)
            if va.shape != vb.shape or not np.array_equal(va, vb, equal_nan=True):
                diffs.append(f"{k}: values differ")
            if not np.array_equal(a.status(k), b.status(k)):
                diffs.append(f"{k}: status differs {a.counts(k)} vs {b.counts(k)}")
            if not a.errors(k).equals(b.errors(k)):
                diffs.append(f"{k}: errors differ")
            if a.batch_sizes(k) != b.batch_sizes(k):
                diffs.append(f"{k}: batch sizes {a.batch_sizes(k)} vs {b.batch_sizes(k)}")
    compared = 0
    for sub in ("run", "predict"):
        files = sorted(p.relative_to(ref) for p in (ref / sub).rglob("*")
                       if p.is_file() and (p.name == "predictions.csv" or "submission" in p.parts)
                       and "readme" not in p.name.lower())
        for rel in files:
            compared += 1
            if not (got / rel).is_file():
                diffs.append(f"{rel}: missing")
            elif (ref / rel).read_bytes() != (got / rel).read_bytes():
                diffs.append(f"{rel}: differs")
    if compared < 4:
        diffs.append(f"only {compared} prediction/submission files to compare (expected predictions and submissions)")
    print(f"compared: the store ({len(a.keys())} keys) and {compared} prediction/submission files")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=15, help="kill -9s spread over the steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default=None,
                    help="comma list of steps the kills go to (default: all): features, merge, regress, predict, "
                         "'features shard 0/2', ...")
    ap.add_argument("--out", default="runs/chaos")
    ap.add_argument("--n-sources", type=int, default=6, help="demo photos (12 items each; the last 2 form the unlabelled test split)")
    ap.add_argument("--size", type=int, default=96, help="demo image side")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from experiments.demo_data import DemoConfig, build_demo_dataset

    out = Path(args.out).resolve()
    data = build_demo_dataset(out / "data", DemoConfig(n_sources=args.n_sources, size=args.size, test_sources=2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    py = sys.executable
    for sub in ("ref", "chaos"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)

    t0 = time.perf_counter()
    durations = {}
    for name, cmd in steps(py, data, out / "ref"):
        durations[name] = run_to_end(name, cmd, env)
        print(f"ref   {name:20s} {durations[name]:6.1f} s", flush=True)
    t_ref = time.perf_counter() - t0

    rng = random.Random(args.seed)
    plan = steps(py, data, out / "chaos")
    kills_per_step = {name: 0 for name, _ in plan}
    targets = [n for n, _ in plan if args.steps is None or n in {x.strip() for x in args.steps.split(",")}]
    if not targets:
        raise SystemExit(f"--steps {args.steps!r} names no step; steps: {', '.join(n for n, _ in plan)}")
    for _ in range(args.kills):
        kills_per_step[rng.choice(targets)] += 1
    landed = 0
    t0 = time.perf_counter()
    for name, cmd in plan:
        span = durations[name]  # kill times are drawn within the step's duration...
        for _ in range(kills_per_step[name]):
            after = rng.uniform(0.05, max(0.1, span))
            hit, ran = kill_during(cmd, env, after)
            landed += hit
            if not hit:  # ...learnt again when it ended first (a rerun of a finished step is shorter)
                span = 0.9 * ran
            stores_open(out / "chaos")
            print(f"chaos {name:20s} kill -9 after {after:5.1f} s ({'landed' if hit else 'step had ended'})",
                  flush=True)
        run_to_end(name, cmd, env)
        print(f"chaos {name:20s} completed", flush=True)
    t_chaos = time.perf_counter() - t0

    diffs = compare(out / "ref", out / "chaos")
    print(f"\n{args.kills} kill -9s ({landed} landed while the step ran) over "
          + ", ".join(f"{n} x{k}" for n, k in kills_per_step.items() if k)
          + f"; undisturbed {t_ref:.0f} s, with kills {t_chaos:.0f} s; load average {os.getloadavg()[0]:.1f}")
    if diffs:
        print("DIFFERENT from the undisturbed run:\n  " + "\n  ".join(diffs))
        return 1
    print("EQUAL: the store, predictions and submissions match the undisturbed run bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
