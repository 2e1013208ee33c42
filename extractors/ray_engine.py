"""``--engine ray``: feature extraction spread over a Ray cluster (a laptop, a SLURM allocation,
Kubernetes with KubeRay: the same code; see docs/scale.md).

    python -m extractors run --track image --data D --extractors clip,dinov2 --device cuda \\
        --engine ray --address auto

How it works:

* The driver works out, per extractor key, the wanted items not yet done in the store and cuts
  them into shards of consecutive items (a multiple of the batch size, so the batches are those
  of a single-process run).
* Shard workers are Ray actors holding one GPU each (a 1/K share with ``--actors-per-gpu K``;
  CPU-only works). An actor builds each extractor and loads its weights once, then runs shard
  after shard through the ordinary runner into a small store of its own,
  ``<store>.ray/<key>.part-k-of-N.h5`` (journal, atomic checkpoints: all a single run has).
* A worker process that dies is restarted by Ray (``max_restarts``) and the shard call is retried
  (``max_task_retries``); the runner resumes that shard from its journal.
* When every shard is done the driver merges them into the store (``features_store.merge``)
  and deletes them. A driver that died leaves the shard folder: the next run first merges what
  it holds, then plans only what is still missing.

Every path (dataset, store) must be on a file system all Ray nodes share.
"""
from __future__ import annotations

import fcntl
import math
import os
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

INSTALL_HINT = "--engine ray needs Ray: pip install 'aigc-quality[ray]' (or: pip install 'ray>=2.9')"
#: an actor gets this many calls queued, so it never waits for the driver between shards
QUEUED_PER_ACTOR = 2
#: default shard count per actor and key: enough to balance uneven shards, few enough to merge fast
SHARDS_PER_ACTOR = 4
MAX_DEFAULT_SHARD = 20_000


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    return ray


@dataclass
class Shard:
    spec: str  # extractor spec, rebuilt inside the actor
    key: str
    k: int
    n: int
    positions: np.ndarray  # rows of the manifest this shard computes
    path: Path
    batch_size: int

    def task(self) -> dict[str, Any]:
        return {"spec": self.spec, "positions": self.positions, "path": str(self.path), "batch_size": self.batch_size}


def shard_folder(store: str | os.PathLike) -> Path:
    return Path(f"{store}.ray")


def shard_size_for(n_items: int, n_actors: int, batch_size: int, shard_size: int | None) -> int:
    """Items per shard, rounded up to whole batches (batches then match a single-process run)."""
    if shard_size is None:
        shard_size = min(MAX_DEFAULT_SHARD, math.ceil(n_items / (SHARDS_PER_ACTOR * max(1, n_actors))))
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    return max(batch_size, math.ceil(shard_size / batch_size) * batch_size)


def plan_shards(manifest, extractors: Sequence[tuple[str, Any]], store, folder: Path, split: str | None,
                retry_failed: bool, size: int, skipped: dict[str, int] | None = None, batch_size: int = 32,
                allow_batch_change: bool = False) -> list[Shard]:
    """Shards of the items each extractor key still needs (pending, or failed when retried).
    ``skipped``, when given, receives per key the number of wanted items left alone. A key with rows
    already computed keeps the batch size they were computed with (runner.resume_batch_size)."""
    from features_store.store import DONE, FAILED, FeatureStore

    from .runner import resume_batch_size

    df = manifest.df
    wanted = np.flatnonzero(np.ones(len(df), bool) if split is None else (df["split"] == split).to_numpy())
    shards: list[Shard] = []
    with FeatureStore(store, mode="r") as st:
        rows = st.index_of(df["item_id"].to_numpy()[wanted])
        for spec, ex in extractors:
            key = ex.key()
            todo, bs = wanted, batch_size
            if key in st.keys():
                status = st.status(key)[rows]
                todo = wanted[(status != DONE) & ((status != FAILED) | retry_failed)]
                bs = resume_batch_size(st, key, batch_size, allow_batch_change)
            key_size = math.ceil(size / bs) * bs
            if skipped is not None:
                skipped[key] = len(wanted) - len(todo)
            n = math.ceil(len(todo) / key_size)
            for k in range(n):
                shards.append(Shard(spec, key, k, n, todo[k * key_size:(k + 1) * key_size],
                                    folder / f"{key}.part-{k:05d}-of-{n:05d}.h5", bs))
    return shards


class ShardWorker:
    """A Ray actor: extractors built (weights loaded) once, then shard after shard."""

    def __init__(self, track: str, device: str, precision: str, batch_size: int, workers: int | None,
                 retry_failed: bool, checkpoint_every_s: float, dtype: str, plugins: str | None,
                 threads: int | None, run_options: dict[str, Any]):
        from .runner import load_plugins

        load_plugins(plugins)
        self.threads, self.run_options = threads, run_options
        self.manifest, self.track = None, track
        # Ray points CUDA_VISIBLE_DEVICES at this actor's GPU: it is "cuda" here
        self.device = "cuda" if str(device).startswith("cuda") else device
        self.precision, self.batch_size, self.workers = precision, batch_size, workers
        self.retry_failed, self.checkpoint_every_s, self.dtype = retry_failed, checkpoint_every_s, dtype
        self.extractors: dict[str, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def _extractor(self, spec: str):
        ex = self.extractors.get(spec)
        if ex is None:
            from .registry import for_track

            # shards come key after key: an actor holds one model at a time (7 models at once would
            # need ~9 GB of weights per actor, times --actors-per-gpu)
            self.extractors.clear()
            if self.device == "cuda":
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()
            ex = self.extractors[spec] = for_track(spec, self.track)
            _setup_once(ex)
        return ex

    def run(self, task: dict[str, Any], manifest_ref: list) -> dict[str, Any]:
        """``manifest_ref``: [ObjectRef] (in a list, so Ray hands over the reference and the
        manifest is fetched once per actor, not deserialised for every shard)."""
        import ray

        from features_store.store import FeatureStore

        from .runner import run_extraction

        if self.manifest is None:
            self.manifest = ray.get(manifest_ref[0])

        ex = self._extractor(task["spec"])
        mask = np.zeros(len(self.manifest.df), bool)
        mask[task["positions"]] = True
        with FeatureStore(task["path"], mode="a", dtype=self.dtype) as st:
            s = run_extraction(self.manifest.subset(mask), ex, st, device=self.device, precision=self.precision,
                               batch_size=task.get("batch_size", self.batch_size), workers=self.workers,
                               retry_failed=self.retry_failed,
                               progress=False, checkpoint_every_s=self.checkpoint_every_s, learn_from=self.manifest,
                               threads=self.threads, media_checked=True, **self.run_options)
        return {"key": s.key, "name": s.name, "done": s.done, "failed": s.failed, "skipped": s.skipped,
                "seconds": s.seconds, "dim": s.dim, "failures": s.failures[:20], "pid": os.getpid()}


def _setup_once(ex) -> None:
    """Make ``ex.setup`` load weights on its first call only (the runner calls it once per shard)."""
    real, done = ex.setup, set()

    def setup(device: str = "cpu", precision: str = "fp32") -> None:
        if (device, precision) not in done:
            real(device, precision)
            done.add((device, precision))

    ex.setup = setup


def _lock(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "DRIVER.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another --engine ray run is working on {folder.parent}; wait for it or stop it") from None
    return fd


def _remove_store(path: Path) -> None:
    path.unlink(missing_ok=True)
    shutil.rmtree(f"{path}.journal", ignore_errors=True)


def _start_ray(ray, address: str | None) -> bool:
    """Connect (address: auto, ray://..., host:port) or start a local cluster; True if started here."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
    return True


def _actor_resources(ray, device: str, workers: int | None, actors_per_gpu: int, actors: int | None):
    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
    if actors_per_gpu < 1:
        raise ValueError(f"--actors-per-gpu must be >= 1, got {actors_per_gpu}")
    if str(device).startswith("cuda"):
        if gpus < 1:
            raise RuntimeError(f"--device {device}: the Ray cluster has no GPU (resources: {res})")
        n = gpus * actors_per_gpu
        workers = min(4, max(0, cpus // n - 1)) if workers is None else workers
        opts = {"num_gpus": 1.0 / actors_per_gpu, "num_cpus": max(1, workers)}
    else:
        workers = 0 if workers is None else workers  # on CPU the actors are the parallelism
        opts = {"num_cpus": max(1, workers)}
        n = max(1, cpus // opts["num_cpus"])
    return (actors or n), workers, opts


def run_ray(manifest, specs: Sequence[str], track: str, store: str | os.PathLike, *, address: str | None = None,
            shard_size: int | None = None, actors_per_gpu: int = 1, actors: int | None = None,
            max_restarts: int = 3, device: str = "cpu", precision: str = "auto", batch_size: int = 32,
            workers: int | None = None, split: str | None = None, retry_failed: bool = True,
            progress: bool = True, checkpoint_every_s: float = 60.0, dtype: str | None = None,
            plugins: str | None = None, threads: int | None = None,
            run_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Compute ``specs`` for the pending items of ``manifest`` into ``store`` on Ray; one summary per key.

    ``run_options``: further keyword arguments of ``run_extraction`` for every shard (on_changed,
    allow_batch_change, worker_stall_s, allow_media_mismatch)."""
    run_options = dict(run_options or {})
    ray = import_ray()
    from tqdm.auto import tqdm

    from features_store.merge import merge
    from features_store.store import FeatureStore

    from .base import resolve_precision
    from .registry import for_track

    store = Path(store)
    folder = shard_folder(store)
    lock = _lock(folder)
    started = finished = False
    try:
        # the store holds the whole manifest first, so merged rows land where a single run puts them
        with FeatureStore(store, mode="a", dtype=dtype) as st:
            st.set_manifest(manifest)
            dtype = str(st.dtype)
            if any(for_track(s, track).kind in ("image", "video") for s in specs):
                from features_store.fingerprint import check_media  # changed media: rows pending again

                check_media(st, [manifest.abspath(p) for p in manifest.df["path"]], st.index_of(manifest.df["item_id"]),
                            on_changed=run_options.get("on_changed", "recompute"))
        leftovers = sorted(folder.glob("*.part-*-of-*.h5"))
        if leftovers:  # a driver died: keep what its shards computed, then plan the rest anew
            merge(store, leftovers, allow_partial=True)
            for p in leftovers:
                _remove_store(p)
        resolved = resolve_precision(precision, device)
        extractors = []
        for spec in specs:
            ex = for_track(spec, track)
            ex.device, ex.precision = device, resolved
            extractors.append((spec, ex))

        started = _start_ray(ray, address)
        n_actors, workers, opts = _actor_resources(ray, device, workers, actors_per_gpu, actors)
        n_wanted = len(manifest.df) if split is None else int((manifest.df["split"] == split).sum())
        size = shard_size_for(n_wanted, n_actors, batch_size, shard_size)
        skipped: dict[str, int] = {}
        shards = plan_shards(manifest, extractors, store, folder, split, retry_failed, size, skipped, batch_size,
                             run_options.get("allow_batch_change", False))
        summaries: dict[str, dict[str, Any]] = {}
        for s in shards:
            summaries.setdefault(s.key, {"key": s.key, "done": 0, "failed": 0, "skipped": skipped[s.key],
                                         "seconds": 0.0, "dim": 0, "failures": [], "shards": s.n, "pids": set()})
        if shards:
            _run_shards(ray, tqdm, shards, manifest, summaries, min(n_actors, len(shards)), opts, max_restarts,
                        dict(track=track, device=device, precision=resolved, batch_size=batch_size, workers=workers,
                             retry_failed=retry_failed, checkpoint_every_s=checkpoint_every_s, dtype=dtype,
                             plugins=plugins, threads=threads, run_options=run_options), progress)
            # one merge per key: merge holds the rows it copies in memory until its final checkpoint,
            # so per key the peak is one extractor's block, not the whole store (docs/scale.md)
            for key in summaries:
                merge(store, [s.path for s in shards if s.key == key])
            with FeatureStore(store, mode="a") as st:
                for key, s in summaries.items():
                    if s["done"]:  # extraction wall time summed over the workers (the submission's per-item cost)
                        st.add_timing(key, s["seconds"], s["done"], device)
            for s in shards:
                _remove_store(s.path)
        with FeatureStore(store, mode="r") as st:  # keys with nothing left to do
            for spec, ex in extractors:
                key = ex.key()
                if key not in summaries and key in st.keys():
                    c = st.counts(key)
                    summaries[key] = {"key": key, "done": 0, "failed": 0, "skipped": c["done"] + c["failed"],
                                      "seconds": 0.0, "dim": st.config(key)["dim"], "failures": [], "shards": 0,
                                      "pids": set()}
        finished = True
        return list(summaries.values())
    finally:
        if started:
            ray.shutdown()
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        if finished:  # nothing left to resume: no folder beside the store
            (folder / "DRIVER.lock").unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (something else put files there): left alone


def _run_shards(ray, tqdm, shards, manifest, summaries, n_actors, opts, max_restarts, kwargs, progress) -> None:
    worker_cls = ray.remote(max_restarts=max_restarts, max_task_retries=max_restarts, **opts)(ShardWorker)
    manifest_ref = ray.put(manifest)  # one copy in the object store, fetched once per actor
    pool = [worker_cls.remote(**kwargs) for _ in range(n_actors)]
    queue, inflight = deque(shards), {}

    def submit(actor) -> None:
        if queue:
            shard = queue.popleft()
            inflight[actor.run.remote(shard.task(), [manifest_ref])] = (actor, shard)

    for _ in range(QUEUED_PER_ACTOR):  # round robin: with few shards every actor still gets one
        for actor in pool:
            submit(actor)
    bar = tqdm(total=sum(len(s.positions) for s in shards), desc=f"ray: {len(shards)} shards, {n_actors} actors",
               unit="item", disable=not progress, dynamic_ncols=True)
    try:
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            actor, shard = inflight.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:  # the extractor's own error: say it as it is
                cause = err.as_instanceof_cause()
                raise RuntimeError(f"{shard.path.name}: {type(cause).__name__}: {cause}; computed rows are kept "
                                   "(rerun to continue)") from None
            except ray.exceptions.RayError as err:
                raise RuntimeError(f"{shard.path.name}: Ray worker lost after {max_restarts} restarts "
                                   f"({type(err).__name__}); computed rows are kept (rerun to continue)") from None
            s = summaries[shard.key]
            if res["key"] != shard.key:
                raise RuntimeError(f"{shard.key}: the extractor's key changed in setup ({res['key']}); "
                                   "run it once without --engine ray to settle it")
            for f in ("done", "failed", "skipped", "seconds"):
                s[f] += res[f]
            s["dim"] = res["dim"]
            s["failures"] += res["failures"]
            s["pids"].add(res["pid"])
            bar.update(len(shard.positions))
            submit(actor)
    finally:
        bar.close()
        for actor in pool:
            ray.kill(actor)
