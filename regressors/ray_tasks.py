"""``--engine ray`` for the heads: the Optuna searches and the (fold, head) refits as Ray tasks.

``task_pool.run_graph`` runs its tasks here (``_call``) instead of in the local loky pool. The
tasks are the same (one head tuned, or fitted on one set of rows), so the results are the same:
every search is one task that runs its trials in order with a seeded TPE sampler, exactly as in
a local worker, and every task uses one BLAS thread (one CPU) as a loky worker on a fully used
machine does. The arrays go into Ray's object store once and reach the tasks as read-only views
(the loky pool hands them over as read-only memory maps), not once per task.

With ``--storage`` (a journal file on a file system every node sees, or an RDB URL) the studies
live there: a stopped run resumes them, and their trials can be read back by any machine.

A task whose worker process or node is lost runs again on a live worker (``task_pool._RayPool``,
``MAX_RETRIES`` times, a line on stderr each time). Without ``--storage`` a search starts over
from its first trial, so the result equals an undisturbed run (tested on a simulated cluster).
With ``--storage`` it resumes from the trials its study holds finished; the trial that was
running stays RUNNING in the study, and the trials drawn after the resume come from a fresh
sampler state, so the tuned parameters may differ from an undisturbed run.

``--trial-workers K`` (needs ``--storage``) spreads each search's trials over K Ray tasks that
share its study, each with its own sampler seed. TPE proposes a trial from the trials finished
before it, so the result then depends on timing and differs from run to run (and from the local
pool); the default, one task per search, keeps it deterministic. The study stops at the trial
budget (Optuna's MaxTrialsCallback; trials already running then finish, so up to K-1 more).
``RAY_ADDRESS`` (``--address``) picks the cluster; without it a local one is started, once per
process (Ray stops it at exit).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from extractors.ray_cluster import INSTALL_HINT, import_ray  # noqa: F401 (re-exported)

SQLITE = "sqlite:///"

#: a task whose worker process or node is lost runs again, this many times (task_pool._RayPool says so)
MAX_RETRIES = 3


def _call(fn: Callable, blas_threads: int, *args):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads, user_api="blas"):
        return fn(*args)


def start_ray():
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(log_to_driver=False)  # RAY_ADDRESS, when set, names the cluster to join
    return ray


def shared_storage(storage: str | None) -> str | None:
    """``--storage`` as the tasks on every node must open it. An RDB URL is kept as given. A file (a
    journal, or ``sqlite:///file``) becomes an absolute path (the workers' working folder is not the
    driver's), and every node must see it: a token file written beside it is read by a task on each
    node before any work, and a node that does not see it stops the run here, in one line."""
    if not storage or ("://" in storage and not storage.startswith(SQLITE)):
        return storage
    file = storage[len(SQLITE):] if storage.startswith(SQLITE) else storage
    path = Path(os.path.abspath(file))
    if not path.parent.is_dir():
        raise ValueError(f"--storage {storage}: the folder {path.parent} does not exist")
    ray = start_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from extractors.ray_cluster import alive_nodes, describe

    token = path.with_name(f".{path.name}.seen-by-every-node-{uuid.uuid4().hex[:12]}")
    token.write_text("aigcq: every Ray node must read this file\n")
    blind = []
    try:
        nodes = alive_nodes(ray)
        sees = ray.remote(num_cpus=0, max_retries=1)(_sees)
        refs = {i: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(i, soft=False)).remote(str(token))
                for i in nodes}
        for i, ref in refs.items():
            try:
                if not ray.get(ref, timeout=300):
                    blind.append(describe(nodes[i]))
            except ray.exceptions.RayError:  # a node on its way out (Ray's record lags): it runs nothing
                pass
    finally:
        token.unlink(missing_ok=True)
    if blind:
        raise RuntimeError(f"--storage {storage}: {path} is not seen by Ray node(s) {', '.join(blind)}; with --engine "
                           "ray the studies' file must be on a file system every node shares (or use an RDB URL, "
                           "e.g. postgresql://...)")
    return f"{SQLITE}{path}" if storage.startswith(SQLITE) else str(path)


def _sees(path: str) -> bool:
    return os.path.isfile(path)


def _search_part(spec, X, y, groups, cfg, tag: str, part: int) -> int:
    """One of ``cfg.trial_workers`` searches of one stored study (trials until the budget is reached)."""
    from optuna.study import MaxTrialsCallback

    from .tuning import tune_head

    res = tune_head(spec.kind, X, y, groups, base_params=dict(spec.params), n_trials=cfg.n_trials,
                    n_splits=cfg.tune_folds, seed=cfg.seed, protocol=cfg.protocol, storage=cfg.storage,
                    study_name=f"{tag}-{spec.name}-s{cfg.seed}", prune=cfg.prune,
                    sampler_seed=cfg.seed + 7919 * part,  # part 0 samples as the deterministic search would
                    callbacks=[MaxTrialsCallback(cfg.n_trials, states=None)])
    return res.n_trials


def _tune_shared(tune_one: Callable, spec, X, y, groups, cfg, tag: str):
    """``tune_one`` (``stacking._tune_one``, passed in: this module sits below stacking) whose search
    ran in ``cfg.trial_workers`` parallel parts first; the final call then finds the budget spent and
    only reads the best trial and fits the OOF predictions."""
    import ray

    if spec.tune and cfg.trial_workers > 1:
        part = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_call)
        refs = [ray.put(a) for a in (X, y)]
        ray.get([part.remote(_search_part, 1, spec, refs[0], refs[1], groups, cfg, tag, i)
                 for i in range(cfg.trial_workers)])
    return tune_one(spec, X, y, groups, cfg, tag)
