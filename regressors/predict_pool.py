"""Predictions of a fitted stack spread over the worker pool (per head and row chunk).

After the final fit, ``regressors fit`` predicts the training items it keeps in-sample
(the tuning set) and every other split. One process doing that serially was a third of
an AIGIQA-20K run (SVR with 12,638 support vectors: 25 s for 14,000 rows, kNN 7 s) while
the workers idled. Every head's prediction of a row depends on that row only, so the
work splits into (head, chunk of rows) tasks; the results are exactly the serial ones.
"""
from __future__ import annotations

import numpy as np

from .task_pool import resolve_jobs, run_tasks

# rows per task at least this many: below it a task's pickling and start-up cost more than it saves
MIN_CHUNK_ROWS = 500
# heads whose prediction is the slow part (kernel against all support vectors, distances to all
# training rows), queued first so the cheap ones fill the gaps at the end
SLOW_FIRST = {"svr": 0, "knn": 1, "lgbm": 2}


def _predict_rows(head, X) -> np.ndarray:
    return head.predict(X)


def _row_chunks(n: int, workers: int) -> list[slice]:
    n_chunks = max(1, min(workers, n // MIN_CHUNK_ROWS))
    edges = np.linspace(0, n, n_chunks + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _kind(head) -> str:
    from .heads import HEADS

    for kind, cls in HEADS.items():
        if type(head) is cls:
            return kind
    return ""


def predict_heads_pooled(model, X: np.ndarray, n_jobs: int = -1, desc: str = "predict",
                         engine: str = "local") -> dict[str, np.ndarray]:
    """``model.predict_heads(X)`` computed in worker processes: {head name: predictions}, same order."""
    X = np.asarray(X, dtype=np.float64)
    names = list(model.heads)
    if len(X) == 0:
        return {n: np.zeros(0) for n in names}
    workers = resolve_jobs(n_jobs)
    if workers <= 1 and engine == "local":
        return model.predict_heads(X)
    chunks = _row_chunks(len(X), workers)
    order = sorted(names, key=lambda n: SLOW_FIRST.get(_kind(model.heads[n]), 9))
    tasks = [(n, c) for n in order for c in chunks]
    results = run_tasks(_predict_rows, [(model.heads[n], X[c]) for n, c in tasks], n_jobs, desc, engine)
    out = {n: np.empty(len(X)) for n in names}
    for (n, c), p in zip(tasks, results):
        out[n][c] = p
    return out


def predict_pooled(model, X: np.ndarray, n_jobs: int = -1, desc: str = "predict", engine: str = "local") -> np.ndarray:
    """``model.predict(X)`` with the heads' predictions computed in worker processes."""
    if len(X) == 0:
        return np.zeros(0)
    return model.combine(predict_heads_pooled(model, X, n_jobs, desc, engine))
