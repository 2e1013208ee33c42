"""Optuna tuning of one head on grouped K-fold, pruned fold by fold.

Objective: mean over folds of the challenge main score (see ``metrics``). Folds are
GroupKFold with shuffling, groups = prompt by default, so one prompt never sits on
both sides of a split. After each fold the running mean is reported to Optuna and a
MedianPruner stops trials that are already worse than the median of earlier trials at
the same fold. A study can live in storage (``sqlite:///x.db`` or a JournalStorage
file ``x.journal``) so several processes share it and a stopped study resumes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import optuna
from sklearn.model_selection import GroupKFold, KFold

from .heads import make_head
from .metrics import MetricError, main_score

log = logging.getLogger(__name__)


def make_folds(n: int, groups=None, n_splits: int = 5, seed: int = 0, protocol: str = "grouped"):
    """List of (train_idx, test_idx). protocol: grouped (by ``groups``) or random."""
    if protocol not in ("grouped", "random"):
        raise ValueError(f"protocol must be 'grouped' or 'random', got {protocol!r}")
    idx = np.arange(n)
    if protocol == "random" or groups is None:
        return list(KFold(n_splits, shuffle=True, random_state=seed).split(idx))
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"grouped {n_splits}-fold needs at least {n_splits} distinct groups, got {n_groups}")
    return list(GroupKFold(n_splits, shuffle=True, random_state=seed).split(idx, groups=groups))


def subsample_groups(groups, max_items: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a random subset of whole groups with about ``max_items`` items."""
    n = len(groups)
    if not max_items or n <= max_items:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = rng.permutation(len(uniq))
    counts = np.bincount(inverse)[order]
    keep_groups = order[: int(np.searchsorted(np.cumsum(counts), max_items)) + 1]
    mask = np.isin(inverse, keep_groups)
    return np.flatnonzero(mask)


# ------------------------------------------------------------------ search spaces
GROUP_BLOCK = "generator"  # one-hot block whose groups may get their own target offset/scale


def _suggest_group_target(trial: optuna.Trial, p: dict, block_names: list[str]) -> None:
    """Per-generator offset/scale of the target (see heads._BlockHead.fit), when there is a generator block."""
    if GROUP_BLOCK in block_names and len(block_names) > 1:
        if trial.suggest_categorical("per_generator_target", [False, True]):
            p["group_target"] = GROUP_BLOCK


# LightGBM's boosting rounds and learning rate searched (a trial's cost grows with the rounds)
LGBM_TREES = (100, 800)
LGBM_RATE = (0.01, 0.2)


def suggest_params(trial: optuna.Trial, kind: str, block_names: list[str]) -> dict[str, Any]:
    """Hyper-parameters for one head. Names are stable: they index stored studies."""
    p: dict[str, Any] = {}
    if kind == "svr":
        p["C"] = trial.suggest_float("C", 0.03, 30.0, log=True)
        p["epsilon"] = trial.suggest_float("epsilon", 0.01, 1.0, log=True)
        p["gamma"] = trial.suggest_float("gamma", 0.01, 3.0, log=True) / max(1, len(block_names))
        if len(block_names) > 1:  # relative say of each block in the kernel
            p["weights"] = {b: trial.suggest_float(f"w_{b}", 0.25, 4.0, log=True) for b in block_names}
        _suggest_group_target(trial, p, block_names)
    elif kind == "enet":
        p["alpha"] = trial.suggest_float("alpha", 1e-4, 0.3, log=True)
        p["l1_ratio"] = trial.suggest_float("l1_ratio", 0.0, 1.0)
        _suggest_group_target(trial, p, block_names)
    elif kind == "lgbm":
        p["n_estimators"] = trial.suggest_int("n_estimators", *LGBM_TREES, log=True)
        p["learning_rate"] = trial.suggest_float("learning_rate", *LGBM_RATE, log=True)
        p["num_leaves"] = trial.suggest_int("num_leaves", 4, 64, log=True)
        p["min_child_samples"] = trial.suggest_int("min_child_samples", 5, 200, log=True)
        p["subsample"] = trial.suggest_float("subsample", 0.5, 1.0)
        p["colsample_bytree"] = trial.suggest_float("colsample_bytree", 0.2, 1.0)
        p["reg_lambda"] = trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True)
    elif kind == "knn":  # the per-generator target scaling is fixed by base_specs (the generator is not in `use`)
        p["n_neighbors"] = trial.suggest_int("n_neighbors", 10, 400, log=True)
        p["power"] = trial.suggest_float("power", 0.5, 12.0, log=True)
    else:
        raise ValueError(f"no search space for head {kind!r}")
    return p


def params_from_trial(kind: str, trial_params: dict[str, Any], block_names: list[str]) -> dict[str, Any]:
    """Rebuild head parameters from a finished trial's raw ``params`` (replays suggest_params)."""
    return suggest_params(optuna.trial.FixedTrial(trial_params), kind, block_names)


@dataclass
class TuneResult:
    kind: str
    params: dict[str, Any]
    best_score: float
    n_trials: int
    n_pruned: int
    seconds: float
    history: list[float] = field(default_factory=list)
    # the best trial's out-of-fold predictions on the search folds, when this process ran that trial
    # (None when it came from storage, e.g. a resumed or shared study): callers need not refit them
    oof: np.ndarray | None = None


def create_storage(storage: str | None) -> None:
    """Make an RDB storage's tables now, in this one process: parallel searches (loky workers, Ray
    tasks) opening a new database at once race to create them ("table studies already exists")."""
    if storage and "://" in storage:
        optuna.storages.RDBStorage(storage)


def open_study(name: str, storage: str | None, seed: int, prune: bool) -> optuna.Study:
    """Create or resume a study. ``storage`` may be an RDB URL or a journal file path."""
    if storage and "://" not in storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(storage)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0) if prune else optuna.pruners.NopPruner()
    return optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5), pruner=pruner,
    )


def tune_head(kind: str, X: np.ndarray, y: np.ndarray, groups=None, *, base_params: dict | None = None,
              n_trials: int = 20, n_splits: int = 3, seed: int = 0, protocol: str = "grouped",
              storage: str | None = None, study_name: str | None = None, prune: bool = True,
              timeout: float | None = None, enqueue_defaults: bool = True,
              head_factory: Callable[..., Any] | None = None, sampler_seed: int | None = None,
              callbacks: list | None = None) -> TuneResult:
    """Search hyper-parameters of head ``kind``; returns the best parameters merged into base_params.

    ``sampler_seed`` (default ``seed``, which also fixes the folds) and ``callbacks`` (passed to
    ``study.optimize``) let several processes search one stored study (regressors.ray_tasks)."""
    base_params = dict(base_params or {})
    blocks = base_params.get("blocks")
    block_names = list(blocks) if blocks else ["all"]
    if base_params.get("use"):
        u = base_params["use"]
        block_names = [u] if isinstance(u, str) else list(u)
    folds = make_folds(len(y), groups, n_splits, seed, protocol)
    factory = head_factory or (lambda **p: make_head(kind, **p))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(study_name or f"{kind}-{seed}", storage, seed if sampler_seed is None else sampler_seed, prune)
    if enqueue_defaults and len(study.trials) == 0:
        # start from the hand-set defaults so tuning never does worse than them on the search folds
        defaults = {"svr": {"C": 1.0, "epsilon": 0.1, "gamma": 1.0, **{f"w_{b}": 1.0 for b in block_names}},
                    "enet": {"alpha": 1e-3, "l1_ratio": 0.5},
                    "lgbm": {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
                             "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1e-3},
                    "knn": {"n_neighbors": 100, "power": 4.0}}[kind]
        study.enqueue_trial(defaults if len(block_names) > 1 or kind != "svr" else
                            {k: v for k, v in defaults.items() if not k.startswith("w_")})

    best_oof: dict[str, Any] = {}  # the best complete trial this process ran: number, value, predictions

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **suggest_params(trial, kind, block_names)}
        scores, oof = [], np.zeros(len(y))
        for k, (tr, te) in enumerate(folds):
            model = factory(**params).fit(X[tr], y[tr])
            oof[te] = model.predict(X[te])
            try:
                scores.append(main_score(oof[te], y[te]))
            except MetricError:  # constant predictions: worst possible score, not a crash
                scores.append(0.0)
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        value = float(np.mean(scores))
        if not best_oof or value > best_oof["value"]:
            best_oof.update(number=trial.number, value=value, oof=oof)
        return value

    done_before = len([t for t in study.trials if t.state.is_finished()])
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=max(0, n_trials - done_before), timeout=timeout, gc_after_trial=False,
                   callbacks=callbacks)
    seconds = time.perf_counter() - t0
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tuning {kind}: no trial completed (all {len(study.trials)} failed or pruned)")
    best = study.best_trial
    hist = [t.value for t in complete]
    # the same folds, parameters and fits as a refit would use, so these are its exact predictions
    oof = best_oof["oof"] if best_oof.get("number") == best.number else None
    return TuneResult(
        kind=kind,
        params={**base_params, **params_from_trial(kind, best.params, block_names)},
        best_score=float(best.value),
        n_trials=len(study.trials),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        seconds=seconds,
        history=hist,
        oof=oof,
    )
