"""``--engine ray``: feature extraction spread over a Ray cluster (a laptop, a SLURM allocation,
Kubernetes with KubeRay: the same code; see docs/scale.md).

    python -m extractors run --track image --data D --extractors clip,dinov2 --device cuda \\
        --engine ray --address auto

How it works:

* The driver works out, per extractor key, the wanted items not yet done in the store and cuts
  them into shards of consecutive items (a multiple of the batch size, so the batches are those
  of a single-process run). The shards are a queue: a worker that is free takes the next one.
* Shard workers are Ray actors holding one GPU each (a 1/K share with ``--actors-per-gpu K``;
  on CPU, ``max(1, --workers)`` CPUs each). Each node gets as many as it can hold, counted node
  by node (a node of 3 CPUs holds one worker of 2 CPUs, not 1.5), and each worker is pinned to
  its node. An actor builds each extractor and loads its weights once, then runs shard after
  shard through the ordinary runner into a scratch store in its node's TMPDIR, and returns the
  rows (values, failures, feature names) through Ray's object store.
* The driver alone writes ``--store``: each shard's rows go into the store's journal as they
  arrive, with checkpoints as in a single run. Nothing about the store needs to be shared with
  the workers (a relative ``--store``, a driver-local disk: all fine). The media must be readable
  by every worker at the path the driver sees; each worker checks that on a sample before it
  takes a shard, and a worker that cannot read it stops the run with one line saying so.
* A worker lost with its node or process (preemption, OOM kill, ``kill -9``): its shard goes back
  to the queue and another worker computes it (``--max-restarts`` times per shard), and a new
  worker is started where a node has room. A line says what was lost and what was requeued. A
  driver that dies keeps every shard it had recorded (the store's journal); rerun the command.

The Ray engine of older versions wrote shard stores under ``<store>.ray/``; a rerun merges
any it finds there first.
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .ray_cluster import INSTALL_HINT, alive_nodes, describe, gone, import_ray, node_capacity  # noqa: F401 (re-exported)

#: default shard count per worker and key: enough to balance uneven shards and to lose little
#: with a lost node, few enough that per-shard costs (a scratch store, one journal entry) stay small
SHARDS_PER_ACTOR = 4
#: a shard's rows travel through the object store: 2,048 rows of Re-IQA's 8,192 floats are 67 MB
MAX_DEFAULT_SHARD = 2048
#: media files each new worker opens before it takes a shard
PROBE_ITEMS = 3
#: with shards left and no worker alive (or able to start) for this long, the run stops
NO_WORKER_WAIT_S = 300.0
#: how often the driver looks for nodes that joined (an autoscaler, a replaced pod)
RESIZE_EVERY_S = 30.0


@dataclass
class Shard:
    spec: str  # extractor spec, rebuilt inside the actor
    key: str
    k: int
    n: int
    positions: np.ndarray  # rows of the manifest this shard computes
    batch_size: int
    tries: int = 0  # times it was handed to a worker
    names: list[str] | None = None  # the key's feature names in the driver's store (what the extractor learnt)
    stop_if_broken: bool = True  # False once the key computed rows: a block of failing items fails item by item

    @property
    def name(self) -> str:
        return f"{self.key} shard {self.k + 1}/{self.n}"

    def task(self) -> dict[str, Any]:
        return {"spec": self.spec, "positions": self.positions, "batch_size": self.batch_size, "names": self.names,
                "stop_if_broken": self.stop_if_broken}


def shard_folder(store: str | os.PathLike) -> Path:
    """Where the Ray engine of older versions left its shard stores."""
    return Path(f"{store}.ray")


def shard_size_for(n_items: int, n_actors: int, batch_size: int, shard_size: int | None) -> int:
    """Items per shard, rounded up to whole batches (batches then match a single-process run)."""
    if shard_size is None:
        shard_size = min(MAX_DEFAULT_SHARD, math.ceil(n_items / (SHARDS_PER_ACTOR * max(1, n_actors))))
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    return max(batch_size, math.ceil(shard_size / batch_size) * batch_size)


def plan_shards(manifest, extractors: Sequence[tuple[str, Any]], store, split: str | None, retry_failed: bool,
                size: int, skipped: dict[str, int] | None = None, batch_size: int = 32,
                allow_batch_change: bool = False) -> list[Shard]:
    """Shards of the items each extractor key still needs (pending, or failed when retried).
    ``store``: an open FeatureStore. ``skipped``, when given, receives per key the number of wanted
    items left alone. A key with rows already computed keeps the batch size they were computed
    with (runner.resume_batch_size)."""
    from features_store.store import DONE, FAILED

    from .runner import resume_batch_size

    df = manifest.df
    wanted = np.flatnonzero(np.ones(len(df), bool) if split is None else (df["split"] == split).to_numpy())
    shards: list[Shard] = []
    st = store
    rows = st.index_of(df["item_id"].to_numpy()[wanted])
    for spec, ex in extractors:
        key = ex.key()
        todo, bs, names = wanted, batch_size, stored_names(st, key)
        if key in st.keys():
            status = st.status(key)[rows]
            todo = wanted[(status != DONE) & ((status != FAILED) | retry_failed)]
            bs = resume_batch_size(st, key, batch_size, allow_batch_change)
        key_size = math.ceil(size / bs) * bs
        if skipped is not None:
            skipped[key] = len(wanted) - len(todo)
        n = math.ceil(len(todo) / key_size)
        for k in range(n):
            shards.append(Shard(spec, key, k, n, todo[k * key_size:(k + 1) * key_size], bs, names=names))
    return shards


def stored_names(st, key: str) -> list[str] | None:
    """``key``'s feature names in the store ``st`` once it holds rows (None before): an extractor that
    learns from the manifest (the generator vocabulary) keeps what it learnt then (runner's ``stored_names``)."""
    return st.feature_names(key) if key in st.keys() and st.config(key)["dim"] else None


class ShardWorker:
    """A Ray actor: extractors built (weights loaded) once, then shard after shard."""

    def __init__(self, track: str, device: str, precision: str, batch_size: int, workers: int | None,
                 retry_failed: bool, checkpoint_every_s: float, dtype: str, plugins: str | None,
                 threads: int | None, run_options: dict[str, Any]):
        from .runner import load_plugins

        remove_stale_scratch()
        load_plugins(plugins)
        self.threads, self.run_options = threads, run_options
        self.manifest, self.track = None, track
        # Ray points CUDA_VISIBLE_DEVICES at this actor's GPU: it is "cuda" here
        self.device = "cuda" if str(device).startswith("cuda") else device
        self.precision, self.batch_size, self.workers = precision, batch_size, workers
        self.retry_failed, self.checkpoint_every_s, self.dtype = retry_failed, checkpoint_every_s, dtype
        self.extractors: dict[str, Any] = {}

    def probe(self, paths: Sequence[str], manifest_ref: list) -> dict[str, Any]:
        """Where this worker runs, and which of ``paths`` (media the driver can read) it cannot
        open. Fetches the manifest (``[ObjectRef]``: in a list so Ray hands over the reference;
        fetched once per actor, not deserialised for every shard)."""
        import ray

        unreadable = []
        for p in paths:
            try:
                with open(p, "rb") as f:
                    f.read(1)
            except OSError as err:
                unreadable.append((p, err.strerror or str(err)))
        self.manifest = ray.get(manifest_ref[0])
        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                "ip": ray.util.get_node_ip_address(), "pid": os.getpid(), "cwd": os.getcwd(),
                "unreadable": unreadable}

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

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Compute one shard into a scratch store on this node; return its rows."""
        from features_store.store import FeatureStore

        from .runner import run_extraction

        ex = self._extractor(task["spec"])
        mask = np.zeros(len(self.manifest.df), bool)
        mask[task["positions"]] = True
        scratch = Path(tempfile.mkdtemp(prefix=_scratch_prefix(os.getpid())))
        try:
            with FeatureStore(scratch / "shard.h5", mode="a", dtype=self.dtype) as st:
                s = run_extraction(self.manifest.subset(mask), ex, st, device=self.device, precision=self.precision,
                                   batch_size=task.get("batch_size", self.batch_size), workers=self.workers,
                                   retry_failed=self.retry_failed, progress=False,
                                   checkpoint_every_s=self.checkpoint_every_s, learn_from=self.manifest,
                                   threads=self.threads, media_checked=True, stored_names=task.get("names"),
                                   stop_if_broken=task.get("stop_if_broken", True), **self.run_options)
                rows = shard_rows(st, s.key)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {**rows, "key": s.key, "done": s.done, "failed": s.failed, "skipped": s.skipped, "seconds": s.seconds,
                "dim": s.dim, "failures": s.failures[:20], "pid": os.getpid()}


def _scratch_prefix(pid: int) -> str:
    # the host too: a TMPDIR that several machines share must not have one clean up another's ('+' is in no host name)
    return f"aigcq-shard-{socket.gethostname()}+{pid}+"


def remove_stale_scratch() -> None:
    """Remove the scratch stores of this host's shard workers that are gone. A worker killed mid-shard
    (``ray.kill`` at Ctrl-C or after an error, a driver that died, kill -9, the OOM killer) runs no
    clean-up; each new worker removes what dead ones left in its TMPDIR, so that it does not pile up."""
    prefix = _scratch_prefix(0)[:-2]
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*+*"):
        pid = folder.name[len(prefix):].split("+", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # gone (a live process, ours or another user's, keeps its folder)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def shard_rows(st, key: str) -> dict[str, Any]:
    """What a store holds of ``key`` (by item id), for :func:`record_rows` into another store."""
    from features_store.store import DONE, FAILED

    c = st.config(key)
    status, ids = st.status(key), st.item_ids()
    done, failed = np.flatnonzero(status == DONE), np.flatnonzero(status == FAILED)
    errors = st.errors(key).set_index("row")["error"]
    return {"identity": c["identity"], "name": c["name"], "kind": c["kind"] or "",
            # names are only real once a row was computed (until then the store makes up name_0...)
            "names": st.feature_names(key) if len(done) else [], "batch_sizes": st.batch_sizes(key),
            "done_ids": ids[done], "values": st.read(key, done, dtype=None) if len(done) else None,
            "failed_ids": ids[failed], "messages": [errors[r] for r in failed]}


def record_rows(st, key: str, rows: dict[str, Any]) -> None:
    """Write a shard's rows into the driver's store: one journal entry, as a batch of a single run."""
    st.ensure_config(key, rows["identity"], feature_names=rows["names"] or None, name=rows["name"], kind=rows["kind"])
    names = rows["names"]
    new_names = bool(names) and not (st.config(key)["dim"] == len(names) and st.feature_names(key) == names)
    if names:
        st.set_feature_names(key, names)  # as the runner does at its first computed batch
    st.set_batch_sizes(key, {*st.batch_sizes(key), *rows["batch_sizes"]})
    st.record(key, st.index_of(rows["done_ids"]), rows["values"], st.index_of(rows["failed_ids"]), rows["messages"])
    if new_names:  # the file takes names once it knows the width: now, not at the next checkpoint, so that a
        st.checkpoint()  # driver killed in between does not leave journaled rows named nss_0 ... (one copy per key)


def _setup_once(ex) -> None:
    """Make ``ex.setup`` load weights on its first call only (the runner calls it once per shard)."""
    real, done = ex.setup, set()

    def setup(device: str = "cpu", precision: str = "fp32") -> None:
        if (device, precision) not in done:
            real(device, precision)
            done.add((device, precision))

    ex.setup = setup


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


def _actor_options(ray, device: str, workers: int | None, actors_per_gpu: int) -> tuple[int, dict[str, float]]:
    """(DataLoader workers per actor, the actor's Ray resources)."""
    if actors_per_gpu < 1:
        raise ValueError(f"--actors-per-gpu must be >= 1, got {actors_per_gpu}")
    if str(device).startswith("cuda"):
        gpu_nodes = [n["Resources"] for n in alive_nodes(ray).values() if n["Resources"].get("GPU", 0) > 0]
        if not gpu_nodes:
            raise RuntimeError(f"--device {device}: the Ray cluster has no GPU (resources: {ray.cluster_resources()})")
        if workers is None:  # the CPUs of the tightest GPU node shared by its actors, one kept for the actor itself
            per_actor = min(r.get("CPU", 0) // (r["GPU"] * actors_per_gpu) for r in gpu_nodes)
            workers = int(min(4, max(0, per_actor - 1)))
        return workers, {"num_gpus": 1.0 / actors_per_gpu, "num_cpus": max(1, workers)}
    workers = 0 if workers is None else workers  # on CPU the actors are the parallelism
    return workers, {"num_cpus": max(1, workers)}


def _say(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"ray: {msg}", file=sys.stderr)


class _Pool:
    """Shard workers: pinned to the nodes that can hold them, at most ``limit``. A worker takes
    shards once its probe came back (it runs, and reads the media); a lost one is dropped."""

    def __init__(self, ray, cls, kwargs: dict[str, Any], opts: dict[str, float], limit: int,
                 probe_paths: list[str], manifest_ref, say: Callable[[str], None] = _say):
        self.ray, self.cls, self.kwargs, self.opts, self.limit = ray, cls, kwargs, opts, limit
        self.probe_paths, self.manifest_ref, self.say = probe_paths, manifest_ref, say
        self.node_of: dict[Any, str | None] = {}  # every live actor -> its node (None: placed by Ray)
        self.nodes: dict[str, dict[str, Any]] = {}  # every node that held one of ours -> Ray's record of it
        self.starting: dict[Any, Any] = {}  # probe ref -> actor
        self.info: dict[Any, dict[str, Any]] = {}  # ready actors -> their probe's answer
        self.pids: set[int] = set()
        self.lost_nodes: dict[str, str] = {}  # node id -> address
        self.died = 0  # worker processes lost on nodes that are still alive
        self.resized = 0.0

    def ready(self) -> list:
        return list(self.info)

    def resize(self, wanted: int) -> None:
        """Start workers where nodes have room, up to ``min(limit, wanted)`` in all."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.resized = time.monotonic()
        wanted = min(self.limit, wanted)
        nodes = [n for i, n in alive_nodes(self.ray).items() if i not in self.lost_nodes]
        self.nodes.update({n["NodeID"]: n for n in nodes})
        room = Counter(node_capacity(nodes, self.opts))
        room.subtract(Counter(n for n in self.node_of.values() if n is not None))
        new: list[str | None] = []
        while len(self.node_of) + len(new) < wanted and +room:
            for node in sorted(+room):  # one per node in turn: few shards still spread over the nodes
                if len(self.node_of) + len(new) < wanted:
                    new.append(node)
                    room[node] -= 1
        if not self.node_of and not new and wanted:
            # no node can hold one now: one left to Ray's scheduler (an autoscaler may add a node for it)
            new.append(None)
            have = ", ".join(f"{n['NodeManagerAddress']}: {_resources(n['Resources'])}" for n in nodes)
            self.say(f"no node can hold a shard worker needing {_resources(self.opts)} (nodes: {have or 'none'}); "
                     f"waiting up to {NO_WORKER_WAIT_S:.0f} s for one")
        for node in new:
            strategy = NodeAffinitySchedulingStrategy(node, soft=False) if node else "DEFAULT"
            actor = self.cls.options(scheduling_strategy=strategy).remote(**self.kwargs)
            self.node_of[actor] = node
            self.starting[actor.probe.remote(self.probe_paths, [self.manifest_ref])] = actor

    def probed(self, ref) -> Any:
        """The probe came back: the actor is ready (returned), or lost (None); unreadable media or
        a worker that cannot start (e.g. a plugin it cannot import) stop the run."""
        actor = self.starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            if err.actor_init_failed:
                raise RuntimeError(f"a shard worker could not start: {_first_line(err)}") from None
            self.lost(actor, err)
            return None
        except self.ray.exceptions.RayError as err:
            self.lost(actor, err)
            return None
        if info["unreadable"]:
            path, why = info["unreadable"][0]
            raise RuntimeError(
                f"node {info['ip']} ({info['host']}) cannot read the media: {path}: {why} "
                f"({len(info['unreadable'])} of {len(self.probe_paths)} sampled files). Every Ray node must see the "
                "dataset at the path the driver sees (a shared file system, or a copy at that path); nothing was "
                "computed there")
        if self.node_of[actor] is None:
            self.node_of[actor] = info["node"]
        self.info[actor] = info
        self.pids.add(info["pid"])
        return actor

    def lost(self, actor, err: BaseException) -> str:
        """Drop ``actor`` (its process or node is gone); what happened, in words."""
        node = self.node_of.pop(actor, None)
        info = self.info.pop(actor, {})
        try:
            self.ray.kill(actor)  # an actor that was only unreachable must not come back and hold its resources
        except Exception:  # noqa: BLE001 - already gone
            pass
        record = self.nodes.get(node) or next((n for n in self.ray.nodes() if n["NodeID"] == node), None)
        if node in self.lost_nodes or (record is not None and gone(self.ray, {node: record})):
            if node not in self.lost_nodes:
                self.lost_nodes[node] = describe(record)
            return f"node {self.lost_nodes[node]} lost"
        self.died += 1
        where = f" on {info['ip']} (id {info['node'][:8]})" if info else ""
        return f"worker process {info.get('pid', '?')}{where} lost ({type(err).__name__})"

    def close(self) -> None:
        for actor in list(self.node_of):
            self.ray.kill(actor)
        self.node_of.clear()


def _resources(r: dict[str, float]) -> str:
    names = {"CPU": "CPU", "GPU": "GPU", "num_cpus": "CPU", "num_gpus": "GPU"}
    return " ".join(f"{v:g} {names[k]}" for k, v in r.items() if k in names and v)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def _probe_paths(manifest, shards: list[Shard], extractors: Sequence[tuple[str, Any]]) -> list[str]:
    """Up to PROBE_ITEMS media files of the planned shards (first, middle, last) that the driver can read."""
    media_keys = {ex.key() for _, ex in extractors if ex.kind in ("image", "video")}
    pos = np.unique(np.concatenate([s.positions for s in shards if s.key in media_keys] or [np.zeros(0, int)]))
    paths: list[str] = []
    for p in pos[np.linspace(0, len(pos) - 1, PROBE_ITEMS).astype(int)] if len(pos) else []:
        path = manifest.abspath(manifest.df["path"].iat[int(p)])
        if path and os.path.isfile(path) and path not in paths:
            paths.append(path)
    return paths


def run_ray(manifest, specs: Sequence[str], track: str, store: str | os.PathLike, *, address: str | None = None,
            shard_size: int | None = None, actors_per_gpu: int = 1, actors: int | None = None,
            max_restarts: int = 3, device: str = "cpu", precision: str = "auto", batch_size: int = 32,
            workers: int | None = None, split: str | None = None, retry_failed: bool = True,
            progress: bool = True, checkpoint_every_s: float = 60.0, dtype: str | None = None,
            plugins: str | None = None, threads: int | None = None,
            run_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Compute ``specs`` for the pending items of ``manifest`` into ``store`` on Ray; one summary per key.

    ``max_restarts``: times a shard goes back to the queue after its worker was lost.
    ``run_options``: further keyword arguments of ``run_extraction`` for every shard (on_changed,
    allow_batch_change, worker_stall_s, allow_media_mismatch)."""
    run_options = dict(run_options or {})
    ray = import_ray()
    from features_store.merge import merge
    from features_store.store import FeatureStore

    from .base import resolve_precision
    from .registry import for_track

    store = Path(store)
    started = False
    try:
        # the store holds the whole manifest first, so rows land where a single run puts them
        with FeatureStore(store, mode="a", dtype=dtype) as st:
            st.set_manifest(manifest)
            dtype = str(st.dtype)
            if any(for_track(s, track).kind in ("image", "video") for s in specs):
                from features_store.fingerprint import check_media  # changed media: rows pending again

                check_media(st, [manifest.abspath(p) for p in manifest.df["path"]], st.index_of(manifest.df["item_id"]),
                            on_changed=run_options.get("on_changed", "recompute"))
        folder = shard_folder(store)
        leftovers = sorted(folder.glob("*.part-*-of-*.h5"))
        if leftovers:  # shard stores of an older version's engine: keep what they computed
            merge(store, leftovers, allow_partial=True)
            for p in leftovers:
                _remove_store(p)
            for p in (folder / "DRIVER.lock", folder):
                try:
                    p.unlink() if p.is_file() else p.rmdir()
                except OSError:
                    pass  # something else there: left alone
        resolved = resolve_precision(precision, device)
        extractors = []
        with FeatureStore(store, mode="r") as st:
            for spec in specs:
                ex = for_track(spec, track)
                ex.device, ex.precision = device, resolved
                if hasattr(ex, "fit_manifest"):  # refuses, before any worker starts, what a single run refuses
                    ex.fit_manifest(manifest.df, stored_names(st, ex.key()))  # (a dataset naming new generators)
                extractors.append((spec, ex))

        started = _start_ray(ray, address)
        workers, opts = _actor_options(ray, device, workers, actors_per_gpu)
        capacity = sum(node_capacity(alive_nodes(ray).values(), opts).values())
        if actors is not None and actors > capacity:
            _say(f"--actors {actors}, but the nodes hold {capacity} worker(s) of {_resources(opts)}: "
                 f"starting {max(1, capacity)}")
        n_actors = max(1, min(actors or capacity, capacity))
        n_wanted = len(manifest.df) if split is None else int((manifest.df["split"] == split).sum())
        size = shard_size_for(n_wanted, n_actors, batch_size, shard_size)
        skipped: dict[str, int] = {}
        with FeatureStore(store, mode="a") as st:  # the one writer, for the whole run
            shards = plan_shards(manifest, extractors, st, split, retry_failed, size, skipped, batch_size,
                                 run_options.get("allow_batch_change", False))
            summaries: dict[str, dict[str, Any]] = {}
            for s in shards:
                summaries.setdefault(s.key, {"key": s.key, "done": 0, "failed": 0, "skipped": skipped[s.key],
                                             "seconds": 0.0, "dim": 0, "failures": [], "shards": s.n, "pids": set(),
                                             "requeued": 0})
            if shards:
                kwargs = dict(track=track, device=device, precision=resolved, batch_size=batch_size, workers=workers,
                              retry_failed=retry_failed, checkpoint_every_s=checkpoint_every_s, dtype=dtype,
                              plugins=plugins, threads=threads, run_options=run_options)
                # without --actors the pool grows with the cluster (a node that joins gets workers)
                _run_shards(ray, st, shards, manifest, summaries, actors or sys.maxsize, opts, max_restarts, kwargs,
                            progress, _probe_paths(manifest, shards, extractors), checkpoint_every_s)
                for key, s in summaries.items():
                    if s["done"]:  # extraction wall time summed over the workers (the submission's per-item cost)
                        st.add_timing(key, s["seconds"], s["done"], device)
            for spec, ex in extractors:  # keys with nothing left to do
                key = ex.key()
                if key not in summaries and key in st.keys():
                    c = st.counts(key)
                    summaries[key] = {"key": key, "done": 0, "failed": 0, "skipped": c["done"] + c["failed"],
                                      "seconds": 0.0, "dim": st.config(key)["dim"], "failures": [], "shards": 0,
                                      "pids": set(), "requeued": 0}
        return list(summaries.values())
    finally:
        if started:
            ray.shutdown()


def _run_shards(ray, st, shards: list[Shard], manifest, summaries, limit: int, opts, max_restarts: int,
                kwargs: dict[str, Any], progress: bool, probe_paths: list[str], checkpoint_every_s: float) -> None:
    """The queue: a free worker takes the next shard; a lost worker's shard goes back to the front."""
    from tqdm.auto import tqdm

    from .runner import BrokenExtractor

    # restarts are ours, not Ray's: a restarted actor waits for room the survivors hold (a hang), and
    # its calls' retries were spent on "temporarily unavailable" before Ray declared the node dead
    cls = ray.remote(max_restarts=0, max_task_retries=0, **opts)(ShardWorker)
    pool = _Pool(ray, cls, kwargs, opts, limit, probe_paths, ray.put(manifest))
    queue, inflight = deque(shards), {}  # ObjectRef -> (actor, shard)
    # shards that began with MAX_BROKEN_BATCHES batches failing in compute, while their key had computed
    # nothing yet: a single run stops as broken only if nothing ever works, so they wait for the key's others
    deferred: dict[str, list[tuple[Shard, str]]] = {}

    def release(key: str) -> None:  # the key computed rows: its deferred shards fail their bad items one by one
        for s, _ in deferred.pop(key, []):
            s.stop_if_broken = False
            queue.appendleft(s)

    def waiting(key: str) -> bool:  # shards of ``key`` still queued or being computed
        return any(s.key == key for s in queue) or any(s.key == key for _, s in inflight.values())

    requeued, last_ckpt = 0, time.monotonic()
    idle_since = time.monotonic()
    bar = tqdm(total=sum(len(s.positions) for s in shards), desc=f"ray: {len(shards)} shards", unit="item",
               disable=not progress, dynamic_ncols=True)
    pool.resize(len(shards))
    try:
        while queue or inflight:
            busy = {actor for actor, _ in inflight.values()}
            for actor in pool.ready():
                if queue and actor not in busy:
                    shard = queue.popleft()
                    shard.tries += 1
                    inflight[actor.run.remote(shard.task())] = (actor, shard)
            refs = list(inflight) + list(pool.starting)
            if not refs:  # every worker is gone: start new ones where nodes have room
                pool.resize(len(queue))
                refs = list(pool.starting)
            done, _ = ray.wait(refs, num_returns=1, timeout=10.0)
            if inflight or pool.ready():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > NO_WORKER_WAIT_S:
                raise RuntimeError(f"no shard worker ({_resources(opts)}) could start on the cluster for "
                                   f"{NO_WORKER_WAIT_S:.0f} s with {len(queue)} shard(s) left; the rows computed so "
                                   "far are in the store (rerun to continue)")
            if queue and time.monotonic() - pool.resized > RESIZE_EVERY_S:
                pool.resize(len(queue) + len(inflight))  # nodes that joined get workers
            if not done:
                continue
            ref = done[0]
            if ref in pool.starting:
                if pool.probed(ref) is None and (queue or inflight):
                    pool.resize(len(queue) + len(inflight))
                continue
            actor, shard = inflight.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the extractor's own error: say it as it is (one line)
                cause = err.cause
                what = f"{shard.name}: {type(cause).__name__}: {cause}"
                if isinstance(cause, BrokenExtractor) and shard.stop_if_broken:
                    deferred.setdefault(shard.key, []).append((shard, what))
                    if summaries[shard.key]["done"]:
                        release(shard.key)
                    elif not waiting(shard.key):  # no shard of the key computed a row: the extractor is broken
                        raise RuntimeError(f"{what}; the rows computed so far are in the store") from None
                    continue
                raise RuntimeError(f"{what}; the rows computed so far are in the store (rerun to continue)") from None
            except ray.exceptions.RayError as err:  # the worker's process or node is gone
                what = pool.lost(actor, err) if actor in pool.node_of else "its worker was lost"
                if shard.tries > max_restarts:
                    raise RuntimeError(f"{shard.name}: {what}; it lost its worker {shard.tries} times "
                                       f"(--max-restarts {max_restarts}); the rows computed so far are in the store "
                                       "(rerun to continue)") from None
                queue.appendleft(shard)
                requeued += 1
                summaries[shard.key]["requeued"] += 1
                pool.resize(len(queue) + len(inflight))
                _say(f"{what}: {shard.name} ({len(shard.positions)} items) back in the queue "
                     f"(try {shard.tries + 1} of {max_restarts + 1}); {len(pool.node_of)} worker(s) now")
                continue
            if res["key"] != shard.key:
                raise RuntimeError(f"{shard.key}: the extractor's key changed in setup ({res['key']}); "
                                   "run it once without --engine ray to settle it")
            record_rows(st, shard.key, res)
            if res["done"]:
                release(shard.key)
            elif shard.key in deferred and not waiting(shard.key):
                raise RuntimeError(f"{deferred[shard.key][0][1]}; the rows computed so far are in the store")
            s = summaries[shard.key]
            for f in ("done", "failed", "skipped", "seconds"):
                s[f] += res[f]
            s["dim"] = res["dim"]
            s["failures"] += res["failures"]
            s["pids"].add(res["pid"])
            bar.update(len(shard.positions))
            # a checkpoint copies the file: as in a single run, never more than ~10% of the time
            if time.monotonic() - last_ckpt >= max(checkpoint_every_s, 10 * st.last_checkpoint_s):
                st.checkpoint()
                last_ckpt = time.monotonic()
        st.checkpoint()
    finally:
        bar.close()
        pool.close()
    if requeued:
        lost = f"{len(pool.lost_nodes)} node(s) lost ({', '.join(sorted(pool.lost_nodes.values()))})" \
            if pool.lost_nodes else ""
        died = f"{pool.died} worker process(es) lost" if pool.died else ""
        _say(f"{' and '.join(x for x in (lost, died) if x)}: {requeued} shard(s) requeued and computed again "
             "by other workers")
