"""The Ray feature engine on a simulated multi-node cluster against the local runner, and what a
lost node costs (issue 24). Writes ``benchmarks/results/ray_cluster.json``.

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head that holds no worker
(``num_cpus=0``, as a KubeRay head) and three worker nodes of 1 CPU each, every node its own
raylet and object store. The work is the same CPU work on both sides: ``nss`` over the embedded
demo images (``--crops`` crops of 16 photos x 6 items, ``--size`` px), batch 8, one thread per
process, fixed shards of ``--shard-size`` items. Per round, interleaved:

* ``local``: the local runner, one process (in this process: no start-up cost);
* ``local_2_processes``: two local runner processes at once (``--shard 0/2``, ``1/2``), merged:
  ``ray_2``'s parallelism without Ray, start-up and merge included;
* ``ray_1``, ``ray_2``: the Ray engine with 1 and 2 shard workers (``--actors``);
* ``ray_2_node_lost``: 2 workers, and after ``--lose-at`` of the ``ray_2`` wall time of the same
  round the node of one of them is removed (kill -9, no replacement; the third node is free, so
  the engine starts a worker there). Time lost = its wall minus ``ray_2``'s; the work lost is the
  requeued shard, compared with one shard's compute time (``--shard-size`` / per-worker rate).
  After the round a fresh node replaces the removed one (not timed).

End-to-end wall times (actor start, planning, the driver's writes included; the cluster is
started once). Ray workers run at nice 0 like this process (``RAY_worker_niceness``).

    python benchmarks/bench_ray_cluster.py [--repeat 2] [--crops 4] [--size 384] [--shard-size 32]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LOAD_START = os.getloadavg()


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


# the code measured is the code of the start: later edits to the tree do not count
COMMIT = _git("rev-parse", "--short=12", "HEAD") + (
    "+dirty" if _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results") else "")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _extract(data: Path, store: Path, extra: list[str]) -> tuple[float, str, str]:
    from extractors.__main__ import main as ex_main

    for p in (store, Path(f"{store}.journal")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    argv = ["run", "--track", "image", "--data", str(data), "--extractors", "nss", "--store", str(store),
            "--batch-size", "8", "--workers", "0", "--threads", "1", "--no-progress", *extra]
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = ex_main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"extraction failed ({rc}): {out.getvalue()}\n{err.getvalue()[-3000:]}")
    return wall, out.getvalue(), err.getvalue()


def _extract_two_processes(data: Path, store: Path) -> float:
    """The same items by two local runner processes at once (``--shard 0/2`` and ``1/2``), then merged:
    the parallelism of ``ray_2`` without Ray (process start and merge included, as Ray's are)."""
    from features_store.merge import merge

    shards = [store.with_name(f"{store.stem}.shard-{k}-of-2.h5") for k in range(2)]
    for p in (store, *shards):
        shutil.rmtree(f"{p}.journal", ignore_errors=True)
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "extractors", "run", "--track", "image", "--data", str(data), "--extractors", "nss",
           "--store", str(store), "--batch-size", "8", "--workers", "0", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--shard", f"{k}/2"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a local shard failed: {p.stderr.read()[-3000:]}")
    merge(store, shards)
    return time.perf_counter() - t0


def _busy_worker_node(cluster):
    """A worker node whose CPU is taken (it holds a shard worker), or None."""
    from ray._private.state import available_resources_per_node  # measurement only: which node to take away

    free = available_resources_per_node()
    for node in cluster.worker_nodes:
        if free.get(node.node_id, {}).get("CPU", 0.0) < 1.0:  # a node whose CPU is all taken lists none
            return node
    return None


def _lose_a_node(cluster, after_s: float, removed: list) -> threading.Thread:
    def run():
        time.sleep(after_s)
        for _ in range(100):
            node = _busy_worker_node(cluster)
            if node is not None:
                cluster.remove_node(node, allow_graceful=False)
                removed.append((time.perf_counter(), node.node_id))
                return
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _same(a: Path, b: Path) -> bool:
    sys.path.insert(0, str(REPO / "tests"))
    from ray_helpers import store_content

    return store_content(a) == store_content(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--crops", type=int, default=4, help="crops per demo photo (16 photos x crops x 6 items)")
    ap.add_argument("--size", type=int, default=384, help="demo image side (pixels)")
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--lose-at", type=float, default=0.4, help="fraction of ray_2's wall time when a node is lost")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ray_cluster.json"))
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # one thread per process on both sides (the workers inherit this environment)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")  # see benchmarks/bench_scale.py: nice 15 vs 0 is no comparison
    import cv2

    cv2.setNumThreads(1)
    import ray
    from ray.cluster_utils import Cluster

    from experiments.demo_data import DemoConfig, build_demo_dataset
    from features_store import load_dataset

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-ray-cluster-"))
    data = build_demo_dataset(tmp / "data", DemoConfig(n_sources=16, crops_per_source=args.crops, size=args.size))
    n = len(load_dataset(data).df)
    shard = ["--shard-size", str(args.shard_size)]
    print(f"{n} items, load {load_avg()} on {os.cpu_count()} cores", flush=True)

    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           **{v: os.environ[v] for v in ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "HF_HUB_OFFLINE")}}
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    cluster.wait_for_nodes()
    cluster_start_s = time.perf_counter() - t0
    print(f"cluster (head + 3 x 1 CPU) up in {cluster_start_s:.1f} s", flush=True)

    cases = {"local": [], "local_2_processes": None, "ray_1": ["--engine", "ray", "--actors", "1", *shard],
             "ray_2": ["--engine", "ray", "--actors", "2", *shard],
             "ray_2_node_lost": ["--engine", "ray", "--actors", "2", *shard]}
    rows = []
    try:
        for rnd in range(args.repeat):
            wall_ray2 = None
            for case, extra in cases.items():
                removed: list = []
                thread = None
                if case == "ray_2_node_lost":
                    thread = _lose_a_node(cluster, args.lose_at * wall_ray2, removed)
                t_start = time.perf_counter()
                if extra is None:
                    wall, out, err = _extract_two_processes(data, tmp / f"{case}.h5"), "", ""
                else:
                    wall, out, err = _extract(data, tmp / f"{case}.h5", extra)
                if thread is not None:
                    thread.join()
                m = re.search(r"([\d.]+) items/s", out)
                rate = float(m.group(1)) if m else None  # the runner's rate, per worker on Ray
                row = {"case": case, "round": rnd, "items": n, "wall_s": round(wall, 2),
                       "items_per_s": round(n / wall, 2), "rate_per_worker": rate, "load_1min": load_avg()[0]}
                if case == "ray_2":
                    wall_ray2 = wall
                if case.startswith("ray"):
                    row["identical_to_local"] = _same(tmp / f"{case}.h5", tmp / "local.h5")
                if case == "ray_2_node_lost":
                    req = re.search(r"(\d+) shard\(s\) requeued", err)
                    row["node_removed_at_s"] = round(removed[0][0] - t_start, 2) if removed else None
                    row["shards_requeued"] = int(req.group(1)) if req else 0
                    row["time_lost_s"] = round(wall - wall_ray2, 2)
                    row["one_shard_s"] = round(args.shard_size / rate, 2) if rate else None
                    row["messages"] = " | ".join(ln for ln in err.splitlines() if ln.startswith("ray: "))
                    cluster.add_node(num_cpus=1)  # back to three worker nodes for the next round
                    cluster.wait_for_nodes()
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {c: statistics.median(r["wall_s"] for r in rows if r["case"] == c) for c in cases}
    lost = [r for r in rows if r["case"] == "ray_2_node_lost"]
    summary = {"median_wall_s": med,
               "throughput_vs_local": {c: round(med["local"] / med[c], 3) for c in cases if c != "local"},
               "ray_2_vs_local_2_processes": round(med["local_2_processes"] / med["ray_2"], 3),
               "median_time_lost_s": statistics.median(r["time_lost_s"] for r in lost),
               "median_one_shard_s": statistics.median(r["one_shard_s"] for r in lost if r["one_shard_s"]),
               "all_identical_to_local": all(r.get("identical_to_local", True) for r in rows),
               "cluster_start_s": round(cluster_start_s, 1), "shard_size": args.shard_size,
               "image_px": args.size}
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": COMMIT,
            "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_avg": load_avg(), "load_avg_start": [round(x, 2) for x in LOAD_START],
            "command": " ".join(["python", "benchmarks/bench_ray_cluster.py", *sys.argv[1:]])}
    doc = {"meta": meta, "rows": rows, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
