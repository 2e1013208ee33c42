"""`aigcq score` speed: items/s with a cold and a warm feature cache, and where a run's time goes.

    python benchmarks/bench_score.py [--model runs/demo/regress/model] [--images runs/demo/data/heldout/list.csv]

Defaults to what `make demo` leaves (the model bundle and the list of images of the photos it
held out of training). Each run is the real command in a fresh process, as a user runs it:
a cold run starts from an empty feature cache (every feature computed), a cached run repeats
it (nothing computed). Runs alternate cold/cached, so both see the same machine load; the
median of ``--repeat`` pairs is reported. The split is the command's own timing of one cold
run: model load (imports included), inputs (content sniffing and hashing), extraction
(extractor set-up and weights included) and prediction; "start" is the rest of the process'
wall time (interpreter start, imports before the load, writing the output).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cache: Path) -> tuple[float, dict[str, float], int, int]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "aigcq", "score", *args, "--cache", str(cache), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"aigcq score failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("time: "))
    timings = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", line)}
    computed = int(re.search(r"features computed for (\d+)", proc.stderr).group(1))
    n = len(proc.stdout.strip().splitlines()) - 1
    return wall, timings, computed, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/demo/regress/model")
    ap.add_argument("--images", default="runs/demo/data/heldout/list.csv", help="a folder, a file or a list")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if not (REPO / args.model).exists() and not Path(args.model).exists():
        print(f"skipped: no model bundle at {args.model} (run `make demo` first, or pass --model/--images)")
        return 0
    cmd = [str(args.model), str(args.images), "--device", args.device, "--threads", "1"]
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            cache = Path(tmp) / f"cache-{r}.h5"
            cold.append(_run(cmd, cache))
            warm.append(_run(cmd, cache))
    n = cold[0][3]
    assert all(c[2] > 0 for c in cold) and all(w[2] == 0 for w in warm)
    c = sorted(cold, key=lambda x: x[0])[len(cold) // 2]
    w = statistics.median(x[0] for x in warm)
    print(f"model {args.model}; {n} items from {args.images}; {args.repeat} cold/cached pairs, median, 1 torch thread")
    print(f"{'run':<8}{'wall s':>9}{'items/s':>9}   (each a fresh `aigcq score` process)")
    print(f"{'cold':<8}{c[0]:>9.2f}{n / c[0]:>9.1f}")
    print(f"{'cached':<8}{w:>9.2f}{n / w:>9.1f}")
    t = c[1]
    parts = {"start": c[0] - t["load"] - t["score"], "load": t["load"], "inputs": t["inputs"],
             "extraction": t["extraction"], "prediction": t["prediction"]}
    print("one cold run: " + ", ".join(f"{k} {v:.2f} s ({v / c[0]:.0%})" for k, v in parts.items()))
    print(f"extraction alone (cold): {n / t['extraction']:.1f} items/s; cached/cold wall: {c[0] / w:.1f}x faster")
    api_cold, api_warm = _in_process(args, n)
    rows = [{"run": "`aigcq score`, fresh process, empty cache (cold)", "wall s": round(c[0], 2), "items/s": round(n / c[0], 1)},
            {"run": "`aigcq score`, fresh process, everything cached", "wall s": round(w, 2), "items/s": round(n / w, 1)},
            {"run": "`Predictor.score` in one process, cold (models loaded)", "wall s": round(api_cold, 3),
             "items/s": round(n / api_cold, 1)},
            {"run": "`Predictor.score` in one process, cached", "wall s": round(api_warm, 4), "items/s": round(n / api_warm)}]
    summary = {"model": args.model, "blocks the model reads": ", ".join(_blocks_read(args.model)),
               "items": n, "median of": args.repeat, "torch threads": 1}
    summary |= {f"one cold run: {k}": f"{v:.2f} s ({v / c[0]:.0%})" for k, v in parts.items()}
    _results.write("score", rows, summary)
    return 0


def _blocks_read(model: str) -> list[str]:
    """The blocks the bundle reads (kept_blocks; every block of a bundle without it)."""
    import json

    b = json.loads(((REPO / model) if (REPO / model).exists() else Path(model)).joinpath("bundle.json").read_text())
    kept = b.get("kept_blocks")
    return [f["block"] for f in b["features"] if kept is None or f["block"] in kept]


def _in_process(args, n: int) -> tuple[float, float]:
    """The Python API in one process (imports and first weights load paid once, outside the timing)."""
    import torch

    sys.path.insert(0, str(REPO))
    from aigcq import Predictor
    from aigcq.inputs import attach_prompts, collect

    torch.set_num_threads(1)
    p = Predictor.load(REPO / args.model if (REPO / args.model).exists() else args.model, progress=False,
                       device=args.device)
    items, _ = collect([str(REPO / args.images if (REPO / args.images).exists() else args.images)])
    attach_prompts(items, None)
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat + 1):
            p.cache = Path(tmp) / f"api-{r}.h5"
            t = time.perf_counter()
            p.score(items)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            p.score(items)
            warm.append(time.perf_counter() - t)
    c, w = statistics.median(cold[1:]), statistics.median(warm[1:])  # the first pair loaded the weights
    print(f"Predictor.score in one process (models loaded): cold {n / c:.1f} items/s, cached {n / w:.0f} items/s "
          f"({c / w:.0f}x)")
    return c, w


if __name__ == "__main__":
    sys.exit(main())
