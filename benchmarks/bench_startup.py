"""Start-up time: `aigcq score` of one cached image against the import floor, and every `--help`.

    python benchmarks/bench_startup.py [--model runs/demo/regress/model] [--image IMG] [--repeat 3]

The floor is what scoring with the demo model cannot avoid importing:
``python -c "import sklearn.svm, sklearn.linear_model, lightgbm, h5py, pandas"``. The score run
is the real command in a fresh process, as a user runs it, on one image whose features are
already in the cache (one untimed run fills it), so it measures start-up, model load and
exit, not extraction. Targets (issue 23): score within 1.3x the floor; every `aigcq <job>
--help` (and `aigcq --help`) under 0.5 s. The commands alternate (floor, score, each help,
then again), so all see the same machine load; medians of ``--repeat`` rounds are reported.

Writes ``benchmarks/results/startup.json``: ``{"meta": {date, commit, machine, cpu_count,
load_avg, command}, "rows": [{name, command, runs_s, median_s, target, ok, ...}]}``.
Defaults to what `make demo` leaves; without a model bundle the score row is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = "import sklearn.svm, sklearn.linear_model, lightgbm, h5py, pandas"
SCORE_RATIO = 1.3
HELP_S = 0.5


def _jobs() -> list[str]:
    sys.path.insert(0, str(REPO))
    from aigcq.cli import JOBS

    return list(JOBS)


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    """OS, CPU model, memory and Python, as every results file records them (benchmarks/_results.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _results

    return _results._machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/demo/regress/model")
    ap.add_argument("--image", default=None, help="default: the first held-out image of the demo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "startup.json"))
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    py = sys.executable
    commands: dict[str, list[str]] = {"floor": [py, "-c", FLOOR]}
    model = Path(args.model) if Path(args.model).is_absolute() else REPO / args.model
    tmp = tempfile.TemporaryDirectory(prefix="bench-startup-")
    if model.is_dir():
        images = sorted((REPO / "runs/demo/data/heldout/images").glob("*.png")) if args.image is None else [Path(args.image)]
        if not images:
            raise SystemExit("no image to score: pass --image")
        cache = Path(tmp.name) / "features-image.h5"
        commands["score"] = [py, "-m", "aigcq", "score", str(model), str(images[0]), "--cache", str(cache),
                             "--no-progress", "--quiet"]
        _time(commands["score"])  # fills the cache: the timed runs compute nothing
    else:
        print(f"score skipped: no model bundle at {args.model} (run `make demo` first, or pass --model)")
    commands["help"] = [py, "-m", "aigcq", "--help"]
    for job in _jobs():
        commands[f"help {job}"] = [py, "-m", "aigcq", job, "--help"]

    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            runs[name].append(_time(cmd))
    load_after = os.getloadavg()
    tmp.cleanup()

    floor = statistics.median(runs["floor"])
    rows = []
    for name, cmd in commands.items():
        med = statistics.median(runs[name])
        row = {"name": name, "command": " ".join(["python", *cmd[1:]]), "runs_s": [round(t, 3) for t in runs[name]],
               "median_s": round(med, 3)}
        if name == "score":
            row.update(ratio_to_floor=round(med / floor, 3), target=f"<= {SCORE_RATIO}x floor",
                       ok=med <= SCORE_RATIO * floor)
        elif name.startswith("help"):
            row.update(target=f"< {HELP_S} s", ok=med < HELP_S)
        rows.append(row)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": _commit(), "machine": _machine(),
            "cpu_count": os.cpu_count(), "load_avg": {"before": [round(x, 2) for x in load_before],
                                                       "after": [round(x, 2) for x in load_after]},
            "command": " ".join(["python", "benchmarks/bench_startup.py", *(argv if argv is not None else sys.argv[1:])]),
            "repeat": args.repeat}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    print(f"{args.repeat} alternating rounds, medians; load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
          f"on {os.cpu_count()} CPUs; commit {meta['commit']}")
    print(f"{'command':<22}{'median s':>10}  target")
    missed = []
    for r in rows:
        extra = f"  {r['ratio_to_floor']:.2f}x floor" if "ratio_to_floor" in r else ""
        verdict = "" if "ok" not in r else ("  ok" if r["ok"] else "  MISSED")
        print(f"{r['name']:<22}{r['median_s']:>10.2f}  {r.get('target', '')}{extra}{verdict}")
        if r.get("ok") is False:
            missed.append(r["name"])
    print(f"wrote {out}")
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
