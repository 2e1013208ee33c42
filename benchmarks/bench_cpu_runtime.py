"""Extraction's CPU settings, before/after: glibc allocator thresholds, and the torch thread default.

    python benchmarks/bench_cpu_runtime.py --part malloc  [--repeat 3] [--fetv ../shared/data/fetv]
    python benchmarks/bench_cpu_runtime.py --part threads [--repeat 3] [--aigiqa ../shared/data/aigiqa20k]

``malloc``: every extractor of the FETV recipe (generator, prompt_minilm, nss, effnet_lite0;
on the video track the image ones run over 8 frames: ``frames:base=...``) as the real
``python -m extractors run`` command into a fresh store, with ``--malloc-threshold off``
(glibc's defaults, the "before") and the default (1 GiB thresholds), 1 torch thread; plus
effnet_lite0's bare forward pass at batch 32 (the issue's measurement). Every run is a fresh
process; the two settings alternate so both see the same machine load; medians of
``--repeat``. Reported: wall time ratio off/on (>1: the thresholds are faster) and the peak
RSS of the largest process of each (os.wait4, DataLoader workers included as descendants).

``threads``: prompt_minilm over the first ``--items`` AIGIQA-20K prompts (the case that
collapsed) and effnet_lite0's forward pass, with ``--threads 1``, ``--threads <CPUs>`` and the
default (auto), on the machine as it is ("as-is": idle only if nothing else runs) and with as
many spinning processes as usable CPUs added ("busy"). Items/s of the compute loop (the runner's own count). The load average
is printed beside each condition.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, float, float]:
    """(wall s, peak RSS MB, output, user CPU s, system CPU s) of the process and its waited-for
    descendants (DataLoader workers). CPU time stretches far less than wall time with the load;
    system time is where page faults of unmapped-and-refaulted buffers show."""
    out = tempfile.TemporaryFile("w+")
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read()
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text, usage.ru_utime, usage.ru_stime


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "AIGCQ_MALLOC_THRESHOLD"):
        env.pop(k, None)
    env.update(extra)
    return env


# ------------------------------------------------------------ the forward-pass child
FORWARD = r"""
import sys, time
from extractors.cpu_runtime import set_malloc_thresholds
set_malloc_thresholds(sys.argv[1])
import torch
from extractors.registry import get_extractor
torch.set_num_threads(int(sys.argv[2]))
ex = get_extractor("effnet_lite0")
ex.setup("cpu", "fp32")
batch, n = int(sys.argv[3]), int(sys.argv[4])
x = torch.randn(batch, 3, 224, 224)
ex.embed(x, [""] * batch)  # warm-up
t = time.perf_counter()
for _ in range(n):
    ex.embed(x, [""] * batch)
dt = time.perf_counter() - t
print(f"RESULT {n * batch / dt:.3f} items/s")
"""


def _forward(setting: str, threads: int, batch: int, n: int) -> tuple[float, float, float, float, float]:
    """(wall, peak MB, items/s of the timed passes, user s, sys s)."""
    wall, rss, text, user, system = _run([sys.executable, "-c", FORWARD, setting, str(threads), str(batch), str(n)],
                                         _env())
    return wall, rss, float(re.search(r"RESULT ([\d.]+)", text).group(1)), user, system


def _extract(data: Path, track: str, spec: str, store: Path, setting: str, threads: str,
             extra_env: dict[str, str] | None = None, workers: int | None = None) -> tuple[float, ...]:
    """(wall, peak MB, items/s of the compute loop, user s, sys s)."""
    cmd = [sys.executable, "-m", "extractors", "run", "--track", track, "--data", str(data), "--extractors", spec,
           "--store", str(store), "--no-progress", "--malloc-threshold", setting]
    cmd += ["--threads", threads] if threads != "default" else []
    cmd += ["--workers", str(workers)] if workers is not None else []
    wall, rss, text, user, system = _run(cmd, _env(**(extra_env or {})))
    m = re.search(r"(\d+) computed.*?([\d.]+) items/s", text)
    if not m or int(m.group(1)) == 0:
        raise SystemExit(f"nothing computed: {' '.join(cmd)}\n{text[-2000:]}")
    return wall, rss, float(m.group(2)), user, system


# ------------------------------------------------------------------ malloc part
def _fetv_subset(fetv: Path, n: int, folder: Path) -> Path:
    """The first ``n`` FETV clips as a table dataset (a YAML beside a cut labels.csv; media stay put)."""
    import csv

    with open(fetv / "labels.csv", newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if n and n < len(rows):
        rows = rows[:: max(1, len(rows) // n)][:n]  # spread over the four generators and the real clips
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["name", "prompt", "model", "static_quality"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("name", "prompt", "model", "static_quality")} for r in rows)
    spec = folder / "fetv_subset.yaml"
    spec.write_text(f"adapter: table\nlabels: labels.csv\nroot: {fetv / 'videos'}\n"
                    "columns: {item_id: name, prompt: prompt, generator: model, mos: static_quality}\n")
    return spec


def part_malloc(args) -> dict:
    specs = args.extractors.split(",")
    rows: dict[str, dict[str, list]] = {s: {"off": [], "on": []} for s in [*specs, "effnet_forward"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = _fetv_subset(args.fetv, args.fetv_items, Path(tmp)) if args.fetv_items else args.fetv
        for r in range(args.repeat):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for spec in specs:
                for mode in order:
                    setting = "off" if mode == "off" else "on"
                    store = Path(tmp) / f"{spec}-{mode}-{r}.h5".replace(":", "_").replace("=", "_")
                    got = _extract(data, "video", spec, store, setting, "1")
                    rows[spec][mode].append(got)
                    print(f"  rep {r} {spec:14s} {mode:3s} wall {got[0]:6.1f} s  peak {got[1]:6.0f} MB  "
                          f"{got[2]:7.1f} items/s  CPU {got[3]:6.1f} + {got[4]:5.1f} s  load {_load()}", flush=True)
            for mode in order:
                got = _forward(mode, 1, 32, args.batches)
                rows["effnet_forward"][mode].append(got)
                print(f"  rep {r} effnet_forward {mode:3s} {got[2]:6.1f} items/s  peak {got[1]:6.0f} MB  "
                      f"CPU {got[3]:6.1f} + {got[4]:5.1f} s  load {_load()}", flush=True)
    result, table = {}, []
    print(f"\nmalloc thresholds (default) vs glibc defaults, FETV ({args.fetv_items or 174} clips), 1 thread, "
          f"medians of {args.repeat}; load {_load()}")
    print("| extractor | wall off (s) | wall on (s) | speed-up (off/on) | items/s off → on "
          "| user+sys CPU s off → on | of which sys | peak RSS off → on (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec, d in rows.items():
        med = {m: [statistics.median(x[i] for x in d[m]) for i in range(3)]
               + [statistics.median(x[3] + x[4] for x in d[m]), statistics.median(x[4] for x in d[m])]
               for m in ("off", "on")}
        if spec == "effnet_forward":  # the rate is the measure (no start-up in it)
            speed = med["on"][2] / med["off"][2]
            label = "effnet_lite0 forward, batch 32"
            wall_off = wall_on = float("nan")
        else:
            speed = med["off"][0] / med["on"][0]
            label = spec
            wall_off, wall_on = med["off"][0], med["on"][0]
        result[spec] = {"speedup": speed, "off": med["off"], "on": med["on"], "runs": d}
        print(f"| {label} | {wall_off:.1f} | {wall_on:.1f} | {speed:.2f}× | {med['off'][2]:.1f} → {med['on'][2]:.1f} "
              f"| {med['off'][3]:.1f} → {med['on'][3]:.1f} | {med['off'][4]:.1f} → {med['on'][4]:.1f} "
              f"| {med['off'][1]:.0f} → {med['on'][1]:.0f} |")
        table.append({"extractor": label, "wall s off → on": f"{wall_off:.1f} → {wall_on:.1f}",
                      "speed-up (off / on)": round(speed, 2),
                      "items/s off → on": f"{med['off'][2]:.1f} → {med['on'][2]:.1f}",
                      "CPU s (user+sys) off → on": f"{med['off'][3]:.1f} → {med['on'][3]:.1f}",
                      "of which system": f"{med['off'][4]:.1f} → {med['on'][4]:.1f}",
                      "peak RSS MB off → on": f"{med['off'][1]:.0f} → {med['on'][1]:.0f}"})
    _results.write("cpu_malloc", table, {"clips": args.fetv_items or 174, "torch threads": 1, "median of": args.repeat})
    return result


# ----------------------------------------------------------------- threads part
def _prompts_table(aigiqa: Path, n: int, folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from features_store import load_dataset

    df = load_dataset(aigiqa).df.head(n)
    path = folder / "prompts.csv"
    df[["item_id", "prompt", "generator", "mos"]].to_csv(path, index=False)
    return path


def _spinners(k: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def part_threads(args) -> dict:
    sys.path.insert(0, str(REPO))
    from extractors.cpu_runtime import usable_cpus

    cpus = usable_cpus()
    settings = ["1", str(cpus), "auto"] if cpus > 1 else ["1", "auto"]
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = _prompts_table(args.aigiqa, args.items, Path(tmp))
        # "as-is": the machine as found (idle only if nothing else runs: see the load average);
        # "busy": plus one spinning process per usable CPU
        for condition, k in (("as-is", 0), ("busy", cpus)):
            spin = _spinners(k)
            try:
                time.sleep(2 if k else 0)
                rates: dict[str, list[float]] = {s: [] for s in settings}
                fwd: dict[str, list[float]] = {s: [] for s in settings}
                loads = []
                for r in range(args.repeat):
                    for s in settings if r % 2 == 0 else settings[::-1]:
                        store = Path(tmp) / f"{condition}-{s}-{r}.h5"
                        rate = _extract(table, "image", "prompt_minilm", store, "on",
                                        "default" if s == "auto" else s)[2]
                        rates[s].append(rate)
                        if s == "auto":
                            code = FORWARD.replace("torch.set_num_threads(int(sys.argv[2]))",
                                                   "from extractors.cpu_runtime import auto_threads; "
                                                   "torch.set_num_threads(auto_threads())")
                        else:
                            code = FORWARD
                        text = _run([sys.executable, "-c", code, "on", s if s != "auto" else "0", "16",
                                     str(args.batches)], _env())[2]
                        fwd[s].append(float(re.search(r"RESULT ([\d.]+)", text).group(1)))
                        loads.append(_load())
                        print(f"  {condition} rep {r} threads {s:4s}: prompt_minilm {rate:6.1f} items/s, "
                              f"effnet forward {fwd[s][-1]:5.1f} items/s  load {loads[-1]}", flush=True)
            finally:
                for p in spin:
                    p.kill()
                    p.wait()
            med = {s: statistics.median(v) for s, v in rates.items()}
            fmed = {s: statistics.median(v) for s, v in fwd.items()}
            result[condition] = {"minilm": med, "forward": fmed, "loads": loads, "spinners": k}
        print(f"\nthread default vs explicit settings ({cpus} usable CPUs), medians of {args.repeat}, items/s")
        print("| condition | workload | " + " | ".join(f"threads {s}" for s in settings) + " | auto / best |")
        print("|---|---|" + "---:|" * (len(settings) + 1))
        table = []
        for condition, d in result.items():
            for w in ("minilm", "forward"):
                vals = d[w]
                best = max(v for s, v in vals.items() if s != "auto")
                name = "prompt_minilm" if w == "minilm" else "effnet_lite0 forward (batch 16)"
                print(f"| {condition} ({d['spinners']} spinners; load {d['loads'][-1]}) | {name} | "
                      + " | ".join(f"{vals[s]:.1f}" for s in settings) + f" | {vals['auto'] / best:.2f} |")
                table.append({"condition": f"{condition} ({d['spinners']} spinning processes; load {d['loads'][-1]})",
                              "workload": name, **{f"threads {s}": round(vals[s], 1) for s in settings},
                              "auto / best": round(vals["auto"] / best, 2)})
    _results.write("cpu_threads", table, {"unit": "items/s", "prompts": args.items, "median of": args.repeat,
                                          "usable CPUs": cpus})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["malloc", "threads", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fetv", type=Path, default=SHARED / "fetv")
    ap.add_argument("--aigiqa", type=Path, default=SHARED / "aigiqa20k")
    ap.add_argument("--extractors", default="generator,prompt_minilm,nss,effnet_lite0")
    ap.add_argument("--fetv-items", type=int, default=40, help="only this many FETV clips (0: all 174)")
    ap.add_argument("--batches", type=int, default=6, help="forward passes timed per run")
    ap.add_argument("--items", type=int, default=1500, help="prompts for the thread benchmark")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    out = {}
    if args.part in ("malloc", "all"):
        if not args.fetv.is_dir():
            print(f"skipped malloc part: {args.fetv} not found (--fetv)")
        else:
            out["malloc"] = part_malloc(args)
    if args.part in ("threads", "all"):
        if not args.aigiqa.is_dir():
            print(f"skipped threads part: {args.aigiqa} not found (--aigiqa)")
        else:
            out["threads"] = part_threads(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
