"""Worker processes (or Ray tasks) that take one task at a time, so that a finished task can add more.

A fit is a small graph: each head's search, then that head's refits (one per outer fold, and
the final model). Run as passes (all searches, then all refits), a pass ends when its slowest
task does: on AIGIQA-20K label-only with 2 workers, LightGBM's search (30 s) left the other
worker idle for 11 s after the other searches. Here the SVR's refits start as soon as the
SVR's search ends. Tasks wait in a priority queue in this process and at most one per worker
is handed over, so the order is ours and not the executor's.

Local engine: loky's reusable process pool (the one joblib uses; workers are kept between
calls), each worker with ``cores // workers`` BLAS threads. Arrays over 1 MB are written once
per call to a temporary ``.npy`` and mapped read-only by the workers (one copy in the page
cache, not one per task), as joblib does. Ray engine: the same tasks as Ray tasks, arrays in
the object store once. Results do not depend on the number of workers: each task computes the
same thing wherever it runs.
"""
from __future__ import annotations

import heapq
import itertools
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

import numpy as np
from tqdm.auto import tqdm

# "all cores" stops here: each worker holds its own copy of a fold's rows and an SVR kernel cache of
# up to 1 GB (measured: 1.3 GB per worker at 14,000 x 2,000), so 64 workers on a big server would
# need ~80 GB for at most ~50 independent tasks. A positive n_jobs is taken as given.
MAX_AUTO_WORKERS = 8
#: arrays larger than this reach the workers as a memory map (Ray: the object store); smaller ones are pickled
SHARE_BYTES = 1 << 20
#: Ray: a task lost this many seconds after a node was found lost is taken as lost with that node
RECENT_LOSS_S = 60.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def resolve_jobs(n_jobs: int) -> int:
    """Worker processes: n_jobs > 0 as given; -1 all usable cores, -2 all but one, ... (at most MAX_AUTO_WORKERS)."""
    if n_jobs == 0:
        raise ValueError("n_jobs must be a positive number of workers or negative (-1: all cores)")
    if n_jobs > 0:
        return int(n_jobs)
    return max(1, min(MAX_AUTO_WORKERS, usable_cores() + 1 + int(n_jobs)))


@dataclass(order=True)
class Task:
    """``fn(*args)``; ``key`` names its result; lower ``priority`` starts first (ties: order of submission)."""
    priority: tuple
    seq: int = field(compare=True)
    key: Hashable = field(compare=False)
    fn: Callable = field(compare=False)
    args: tuple = field(compare=False)


class _Mapped:
    """Stands for a large array in a task's arguments: the worker maps the file read-only."""

    def __init__(self, path: str):
        self.path = path


def _call_mapped(fn: Callable, *args):
    return fn(*(np.load(a.path, mmap_mode="r") if isinstance(a, _Mapped) else a for a in args))


class _LocalPool:
    def __init__(self, workers: int):
        from joblib.externals.loky import get_reusable_executor

        threads = str(max(1, usable_cores() // workers))
        env = {v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
        self.executor = get_reusable_executor(max_workers=workers, env=env)
        self.folder = Path(tempfile.mkdtemp(prefix="aigcq-pool-"))
        self.mapped: dict[int, tuple[np.ndarray, _Mapped]] = {}  # id(array) -> (array kept alive, its file)

    def _arg(self, a):
        if not (isinstance(a, np.ndarray) and a.nbytes > SHARE_BYTES and a.dtype != object):
            return a
        if id(a) not in self.mapped:
            path = self.folder / f"{len(self.mapped)}.npy"
            try:
                np.save(path, a)
            except OSError as err:  # e.g. a full /tmp: say where and what to do, not numpy's traceback
                raise RuntimeError(f"cannot write a {a.nbytes / 2**20:.0f} MB array for the worker processes to "
                                   f"{self.folder} ({err.strerror or err}): set TMPDIR to a folder with room, "
                                   "or run in one process (--jobs 1)") from None
            self.mapped[id(a)] = (a, _Mapped(str(path)))
        return self.mapped[id(a)][1]

    def submit(self, task: Task):
        return self.executor.submit(_call_mapped, task.fn, *(self._arg(a) for a in task.args))

    def wait(self, futures: list) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(futures, return_when=FIRST_COMPLETED).done)

    @staticmethod
    def result(future):
        return future.result()

    def abort(self, running: list) -> None:
        # kill the workers: else the reusable pool runs the other tasks to the end, and the process
        # waits for them at exit (a failed search beside others: minutes); the next call starts a new pool
        self.executor.shutdown(wait=False, kill_workers=True)

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class _Lost(Exception):
    """A Ray task's worker process or node is gone: the task can run again elsewhere."""


class _RayPool:
    def __init__(self):
        from .ray_tasks import MAX_RETRIES, _call, start_ray

        self.ray = start_ray()
        # one BLAS thread per task (one CPU each), as a loky worker on a fully used machine has. Retries
        # are run_graph's (max_retries=0 here), so that a lost node or worker is said, not silent
        self.remote = self.ray.remote(num_cpus=1, max_retries=0)(_call)
        self.max_retries = MAX_RETRIES
        self.tries: dict[Hashable, int] = {}
        from extractors.ray_cluster import alive_nodes

        self.nodes = alive_nodes(self.ray)  # the nodes a lost task may have run on
        self.lost: dict[str, tuple[str, float]] = {}  # node id -> (what it was, when it was found lost)
        self.put: dict[int, tuple[np.ndarray, Any]] = {}  # id(array) -> (array kept alive, ObjectRef)

    def _arg(self, a):
        if isinstance(a, np.ndarray) and a.nbytes > SHARE_BYTES:
            if id(a) not in self.put:
                self.put[id(a)] = (a, self.ray.put(a))
            return self.put[id(a)][1]
        return a

    def submit(self, task: Task):
        self.tries[task.key] = self.tries.get(task.key, 0) + 1
        return self.remote.remote(task.fn, 1, *(self._arg(a) for a in task.args))

    def wait(self, futures: list) -> list:
        return self.ray.wait(futures, num_returns=1)[0]

    def result(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:  # the head's own error, as a local run raises it
            raise err.as_instanceof_cause() from None
        except self.ray.exceptions.TaskCancelledError:
            raise
        except self.ray.exceptions.RayError as err:  # its worker process, or its node, is gone
            raise _Lost(self._what_was_lost(err)) from None

    def _what_was_lost(self, err: BaseException) -> str:
        from extractors.ray_cluster import alive_nodes, gone

        self.nodes.update(alive_nodes(self.ray))
        lost = gone(self.ray, self.nodes)  # Ray's record lags: ask each node's raylet
        now = time.monotonic()
        for node, what in lost.items():
            del self.nodes[node]
            self.lost[node] = (what, now)
        # a node lost a moment ago takes several tasks with it: the later ones find it gone already
        recent = lost or {n: w for n, (w, t) in self.lost.items() if now - t < RECENT_LOSS_S}
        if recent:
            return ", ".join(f"node {what}" for what in recent.values()) + " lost"
        return f"a worker process was lost ({type(err).__name__})"

    def again(self, task: Task, what: str):
        """Submit ``task`` once more after its worker was lost (at most MAX_RETRIES times)."""
        tries = self.tries.get(task.key, 1)
        if tries > self.max_retries:
            raise RuntimeError(f"task {task.key}: {what}; it lost its worker {tries} times, giving up") from None
        print(f"ray: {what}: task {task.key} runs again (try {tries + 1} of {self.max_retries + 1})",
              file=sys.stderr, flush=True)
        return self.submit(task)

    def abort(self, running: list) -> None:
        for ref in running:
            self.ray.cancel(ref, force=True)

    def close(self):
        pass


def run_graph(tasks: Iterable[Task], n_jobs: int, desc: str, engine: str = "local",
              then: Callable[[Hashable, Any], list[Task]] | None = None, progress: bool = True) -> dict[Hashable, Any]:
    """Run ``tasks`` and those that ``then(key, result)`` adds as each one finishes: {key: result}.

    One worker (n_jobs=1, local) runs everything here, in priority order.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    queue = list(tasks)
    heapq.heapify(queue)
    results: dict[Hashable, Any] = {}
    workers = resolve_jobs(n_jobs) if engine == "local" else None
    where = "" if workers == 1 else f" ({workers} workers)" if workers else " (ray)"
    bar = tqdm(total=len(queue), desc=desc + where, leave=False, disable=not progress)  # the total grows as tasks add tasks

    def finished(task: Task, result) -> None:
        results[task.key] = result
        bar.update(1)
        for new in then(task.key, result) if then else ():
            heapq.heappush(queue, new)
            bar.total += 1
        bar.refresh()

    if workers == 1:
        while queue:
            task = heapq.heappop(queue)
            finished(task, task.fn(*task.args))
        bar.close()
        return results
    pool = _LocalPool(workers) if engine == "local" else _RayPool()
    running: dict[Any, Task] = {}
    try:
        while queue or running:
            # local: one task per worker, so the next one is picked when a worker frees up;
            # Ray schedules on the cluster's CPUs itself, so it gets every ready task
            while queue and (workers is None or len(running) < workers):
                task = heapq.heappop(queue)
                running[pool.submit(task)] = task
            for fut in pool.wait(list(running)):
                task = running.pop(fut)
                try:
                    result = pool.result(fut)
                except _Lost as lost:  # Ray only: the same task again, on a worker that is alive
                    running[pool.again(task, str(lost))] = task
                    continue
                finished(task, result)
    except BaseException:  # a task failed, or Ctrl-C: the other tasks' results are not wanted, stop them now
        pool.abort(list(running))
        raise
    finally:
        bar.close()
        pool.close()
    return results


_seq = itertools.count()


def task(key: Hashable, fn: Callable, *args, priority: tuple = ()) -> Task:
    return Task(priority, next(_seq), key, fn, args)


def run_tasks(fn: Callable, tasks: list[tuple], n_jobs: int, desc: str, engine: str = "local") -> list:
    """``[fn(*t) for t in tasks]`` on the pool; results in task order (started in that order too)."""
    if engine == "local":
        n_jobs = min(resolve_jobs(n_jobs), max(1, len(tasks)))
    done = run_graph([task(i, fn, *t, priority=(i,)) for i, t in enumerate(tasks)], n_jobs, desc, engine)
    return [done[i] for i in range(len(tasks))]
