"""``--engine ray`` for the heads: the Optuna searches and the (fold, head) refits as Ray tasks.

``stacking.run_tasks`` hands its task list here instead of to the local joblib/loky pool. The
tasks are the same (one head tuned, or fitted on one set of rows), so the results are the same:
every search is one task that runs its trials in order with a seeded TPE sampler, exactly as in
a local worker, and every task uses one BLAS thread (one CPU) as a loky worker on a fully used
machine does. The arrays go into Ray's object store once and reach the tasks as read-only views
(the loky pool hands them over as read-only memory maps), not once per task.

With ``--storage`` (a journal file on a file system every node sees, or an RDB URL) the studies
live there: a stopped run resumes them, and their trials can be read back by any machine.
``RAY_ADDRESS`` (``--address``) picks the cluster; without it a local one is started, once per
process (Ray stops it at exit).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

INSTALL_HINT = "--engine ray needs Ray: pip install 'aigc-quality[ray]' (or: pip install 'ray>=2.9')"
#: arrays larger than this go into the object store once (smaller ones travel with each task)
_PUT_BYTES = 1 << 20
#: a task whose worker process dies (node lost, OOM kill) runs again, this many times
MAX_RETRIES = 3


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    return ray


def _call(fn: Callable, blas_threads: int, *args):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads, user_api="blas"):
        return fn(*args)


def run_tasks_ray(fn: Callable, tasks: list[tuple], desc: str, blas_threads: int = 1) -> list[Any]:
    """``[fn(*t) for t in tasks]`` as Ray tasks (one CPU each); results in task order."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(log_to_driver=False)  # RAY_ADDRESS, when set, names the cluster to join
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_call)
    put: dict[int, Any] = {}  # id(array) -> ObjectRef: the same X in every task is stored once

    def ref(a):
        if isinstance(a, np.ndarray) and a.nbytes > _PUT_BYTES:
            if id(a) not in put:
                put[id(a)] = ray.put(a)
            return put[id(a)]
        return a

    futures = [remote.remote(fn, blas_threads, *(ref(a) for a in t)) for t in tasks]
    pending = list(futures)
    with tqdm(total=len(futures), desc=f"{desc} (ray)", leave=False) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bar.update(len(ready))
    try:
        return ray.get(futures)
    except ray.exceptions.RayTaskError as err:  # the head's own error, as a local run would raise it
        raise err.as_instanceof_cause() from None
