"""``--engine ray`` for the heads: the Optuna searches and the (fold, head) refits as Ray tasks.

``task_pool.run_graph`` runs its tasks here (``_call``) instead of in the local loky pool. The
tasks are the same (one head tuned, or fitted on one set of rows), so the results are the same:
every search is one task that runs its trials in order with a seeded TPE sampler, exactly as in
a local worker, and every task uses one BLAS thread (one CPU) as a loky worker on a fully used
machine does. The arrays go into Ray's object store once and reach the tasks as read-only views
(the loky pool hands them over as read-only memory maps), not once per task.

With ``--storage`` (a journal file on a file system every node sees, or an RDB URL) the studies
live there: a stopped run resumes them, and their trials can be read back by any machine.

``--trial-workers K`` (needs ``--storage``) spreads each search's trials over K Ray tasks that
share its study, each with its own sampler seed. TPE proposes a trial from the trials finished
before it, so the result then depends on timing and differs from run to run (and from the local
pool); the default, one task per search, keeps it deterministic. The study stops at the trial
budget (Optuna's MaxTrialsCallback; trials already running then finish, so up to K-1 more).
``RAY_ADDRESS`` (``--address``) picks the cluster; without it a local one is started, once per
process (Ray stops it at exit).
"""
from __future__ import annotations

from typing import Callable

INSTALL_HINT = "--engine ray needs Ray: pip install 'aigc-quality[ray]' (or: pip install 'ray>=2.9')"
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
