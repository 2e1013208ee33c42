"""A cached `make features` (nothing to compute) against the first run, and against an older checkout.

    python benchmarks/bench_cached_runs.py --data ../shared/data/aigiqa20k --track image \\
        --extractors generator,prompt_minilm [--before /path/to/older/checkout] [--repeat 5]

The command is the one `make features` runs (``python -m aigcq features ...``, ``--threads 1``
as the README used to recommend), each time in a fresh process, whole-process wall time.
First it fills a fresh store (the "first run", timed once, or give ``--first-run-s``), then it
times ``--repeat`` cached reruns. With ``--before`` the same cached rerun of that checkout
(e.g. a ``git worktree`` of the commit before) alternates with this one on a copy of the store,
so both see the same machine load. Medians; the load average is printed beside them. The
parsed-label cache lives in a temporary ``AIGCQ_CACHE_DIR``, warmed by the first run as a
user's would be.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

REPO = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def _run(checkout: Path, args: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """(wall s, peak RSS MB, output, CPU s) of ``python -m aigcq features ARGS`` run from ``checkout``.

    CPU time (user + sys) is printed beside wall time: on a loaded machine the wall time of a
    one-process command stretches with the load, its CPU time much less."""
    out = tempfile.TemporaryFile("w+")
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "aigcq", "features", *args], cwd=checkout,
                         env={**env, "PYTHONPATH": str(checkout)}, stdout=out, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    out.seek(0)
    text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed in {checkout}: aigcq features {' '.join(args)}\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "aigiqa20k")
    ap.add_argument("--track", default="image")
    ap.add_argument("--extractors", default="generator,prompt_minilm")
    ap.add_argument("--threads", default="1", help="passed as --threads (empty: not passed)")
    ap.add_argument("--before", type=Path, default=None, help="an older checkout to compare with")
    ap.add_argument("--store", type=Path, default=None, help="an existing complete store (skips the first run)")
    ap.add_argument("--first-run-s", type=float, default=None, help="first-run wall time, if measured elsewhere")
    ap.add_argument("--first-run-cpu-s", type=float, default=None, help="first-run CPU time (user+sys), likewise")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_cached_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "AIGCQ_CACHE_DIR": str(tmp / "cache")}
    common = ["--track", args.track, "--data", str(args.data.resolve()), "--extractors", args.extractors,
              "--no-progress", *(["--threads", args.threads] if args.threads else [])]
    try:
        store = tmp / "after.h5"
        first, first_cpu = args.first_run_s, args.first_run_cpu_s
        if args.store:
            shutil.copy(args.store, store)
            _run(REPO, [*common, "--store", str(store)], env)  # warms the label cache; must compute nothing
        else:
            first, rss, text, first_cpu = _run(REPO, [*common, "--store", str(store)], env)
            print(f"first run: {first:.1f} s wall, {first_cpu:.1f} s CPU, peak {rss:.0f} MB, load {_load()}\n"
                  f"{text.strip()}", flush=True)
        runs = {"after": []}
        if args.before:
            shutil.copy(store, tmp / "before.h5")
            runs["before"] = []
        for r in range(args.repeat):
            for which in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                checkout = REPO if which == "after" else args.before
                wall, rss, text, cpu = _run(checkout, [*common, "--store", str(tmp / f"{which}.h5")], env)
                computed = sum(int(n) for n in re.findall(r": (\d+) computed,", text))
                if computed:
                    raise SystemExit(f"the {which} rerun computed {computed} items: not a cached run\n{text}")
                runs[which].append((wall, rss, cpu))
                print(f"  rep {r} {which:6s} {wall:6.2f} s (CPU {cpu:5.2f} s)  peak {rss:5.0f} MB  load {_load()}",
                      flush=True)
        med = {w: tuple(statistics.median(x[i] for x in v) for i in range(3)) for w, v in runs.items()}
        table = []
        print(f"\ncached `aigcq features` on {args.data.name} ({args.extractors}, --threads {args.threads or '-'}), "
              f"median of {args.repeat}, load {_load()}")
        for w, (wall, rss, cpu) in med.items():
            share = f", {100 * wall / first:.2f}% of the first run's wall time ({first:.1f} s)" if first else ""
            share += f", {100 * cpu / first_cpu:.2f}% of its CPU time ({first_cpu:.1f} s)" if first_cpu else ""
            print(f"  {w:6s}: {wall:.2f} s wall, {cpu:.2f} s CPU, peak {rss:.0f} MB{share}")
            table.append({"dataset": args.data.name, "extractors": args.extractors, "checkout": w,
                          "cached rerun wall s": round(wall, 2), "CPU s": round(cpu, 2), "peak MB": round(rss),
                          "first run wall s": round(first, 1) if first else None,
                          "share of the first run (wall)": f"{100 * wall / first:.2f}%" if first else None})
        if "before" in med:
            print(f"  before / after: {med['before'][0] / med['after'][0]:.2f}× wall, "
                  f"{med['before'][2] / med['after'][2]:.2f}× CPU, {med['before'][1] / med['after'][1]:.2f}× peak memory")
        _results.write(f"cached_runs-{args.data.name}", table,
                       {"median of": args.repeat, "threads": args.threads or "default",
                        **({"before": str(args.before)} if args.before else {})})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
