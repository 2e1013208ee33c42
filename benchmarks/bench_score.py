"""`aigcq score` speed: items/s with a cold and a warm feature cache, and where a run's time goes.

    python benchmarks/bench_score.py [--model runs/demo/regress/model] [--images runs/demo/data/heldout]

Defaults to what `make demo` leaves (the model bundle and the images of the photos it held out).
Each configuration is measured in this one process, so the ratios hold on a busy machine.
A cold run uses a fresh cache (every feature computed); a cached run repeats it (nothing
computed). The split covers one cold command-line run: model load (imports included) +
inputs (content sniffing and hashing) + extraction + prediction.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/demo/regress/model")
    ap.add_argument("--images", default="runs/demo/data/heldout", help="a folder (recursive) or a list")
    ap.add_argument("--repeat", type=int, default=3, help="cold and cached runs each (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    if not Path(args.model).exists():
        print(f"skipped: no model bundle at {args.model} (run `make demo` first, or pass --model/--images)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    from aigcq import Predictor
    from aigcq.inputs import attach_prompts, collect

    p = Predictor.load(args.model, progress=False, device=args.device)
    load_s = time.perf_counter() - t0  # first load in this process: imports included
    items, _ = collect([args.images])
    attach_prompts(items, None)
    n = len(items)
    cold, warm, splits = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            p.cache = Path(tmp) / "cache.h5"
            p._extractors.clear()  # rebuild (and reload weights) as a new process would
            t = time.perf_counter()
            df = p.score(items)
            cold.append(time.perf_counter() - t)
            splits.append(dict(p.timings))
            assert (df["status"] == "ok").all(), df[df["status"] != "ok"]
            assert sum(p.computed.values()) > 0
            t = time.perf_counter()
            p.score(items)
            warm.append(time.perf_counter() - t)
            assert sum(p.computed.values()) == 0
    c, w = statistics.median(cold), statistics.median(warm)
    s = splits[cold.index(sorted(cold)[len(cold) // 2])]
    total = load_s + s["score_s"]
    print(f"model {args.model}: {', '.join(f['block'] for f in p.info['features'])}; {n} items from {args.images}")
    print(f"{'run':<8}{'seconds':>10}{'items/s':>10}")
    print(f"{'cold':<8}{c:>10.2f}{n / c:>10.1f}")
    print(f"{'cached':<8}{w:>10.3f}{n / w:>10.1f}")
    print(f"cached / cold speed: {c / w:.0f}x")
    print(f"one cold run ({total:.2f} s): load {load_s:.2f} s ({load_s / total:.0%}, imports included), "
          f"inputs {s['inputs_s']:.2f} s ({s['inputs_s'] / total:.0%}), extraction {s['extraction_s']:.2f} s "
          f"({s['extraction_s'] / total:.0%}, weights loading included), prediction {s['prediction_s']:.3f} s "
          f"({s['prediction_s'] / total:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
