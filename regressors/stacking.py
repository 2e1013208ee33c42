"""Stacking per track, and the honest (nested) cross-validated score.

Base heads: tuned SVR, ElasticNet and LightGBM on all blocks, plus one untuned head
per extractor block ("bag of features"). A non-negative linear meta-learner
(LinearRegression(positive=True)) combines their out-of-fold predictions.

Two nesting schemes (``StackConfig.nested``), both keep every scored item out of
tuning and out of the meta-learner's fit:

* ``split`` (default, affordable on 2 cores): a random set of whole groups (prompts),
  at most ``max_tune_items`` items and ``tune_fraction`` of the data, is set aside as
  the tuning set T. Heads are tuned on T with inner grouped K-fold; the meta-learner
  is fitted on the best trials' out-of-fold predictions on T. The cross-validated
  score is then computed on the remaining items R only: for each outer fold of R the
  heads (fixed hyper-parameters) are refitted on T + the other folds of R and predict
  the held-out fold. T's items are never scored.
* ``full``: classic nested CV. Inside each outer training fold, a tuning subset of at
  most ``max_tune_items`` items is drawn (the whole fold when smaller), heads are tuned
  and the meta-learner fitted as above, then the heads are refitted on the whole outer
  training fold. Every item is scored once. Costs ~``outer_folds`` x more.
* ``auto`` (default): ``full`` below ``auto_full_below`` labelled items, ``split``
  otherwise. On a small set (FETV: 174 clips) ``split`` would score only ~70% of it and
  tune on a few dozen items, which makes both the score and the heads poor; on a large
  set ``full`` costs 5x the time for little gain.

Few groups: grouped K-fold needs at least K groups; with fewer, the outer (and inner)
fold counts drop to the number of groups (a warning says so), and fewer than 2 groups
is an error.

The final model is fitted the same way on all labelled items.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from tqdm.auto import tqdm

from .heads import make_head
from .metrics import MetricError, main_score
from .tuning import make_folds, subsample_groups, tune_head

log = logging.getLogger(__name__)


@dataclass
class StackConfig:
    heads: tuple[str, ...] = ("svr", "enet", "lgbm")  # tuned heads on all blocks
    block_head: str | None = "enet"  # kind of the per-block heads (None: off); enet: cheap on 2 cores
    # untuned preset heads (FIXED_PRESETS) to add to the stack; none by default: svr_smooth did not
    # lift the stack on AIGIQA-20K or T2VQA-DB and scored 0.19 on FETV
    fixed_heads: tuple[str, ...] = ()
    n_trials: int = 12  # per tuned head
    tune_folds: int = 3
    max_tune_items: int = 4000
    tune_fraction: float = 0.5  # of the labelled items, at most, go to the tuning set (nested="split");
    # 0.5 rather than 0.3: T2VQA-DB grouped (7,000 items) stack 0.727 tuned on 3,500 vs 0.712 on 2,100
    outer_folds: int = 5
    nested: str = "auto"  # auto | split | full (see module doc)
    auto_full_below: int = 3000  # nested="auto": "full" below this many labelled items
    pca: int | None = 128  # per-block PCA for blocks wider than this (None: off)
    interact_components: int = 16  # enet: generator one-hot x this many prompt components (0: off)
    protocol: str = "grouped"  # grouped | random
    seed: int = 0
    storage: str | None = None
    prune: bool = True
    n_jobs: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeadSpec:
    name: str
    kind: str
    params: dict[str, Any]
    tune: bool


# Untuned heads with hand-set parameters that did well on real labels (generator + MiniLM,
# T2VQA-DB grouped 5-fold: smooth SVR 0.709 vs default SVR 0.706, and averaging it with the
# default SVR gives 0.716): they add diversity to the stack at the cost of one fit each,
# and a tuned head only sees a tuning subset while these need no tuning at all.
FIXED_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "svr_smooth": ("svr", {"gamma": 0.3, "C": 3.0, "epsilon": 0.1, "group_target": "generator"}),
}


def base_specs(blocks: dict[str, list[int]] | None, cfg: StackConfig) -> list[HeadSpec]:
    """The base heads for a block layout."""
    names = list(blocks) if blocks else []
    specs = []
    for kind in cfg.heads:
        p: dict[str, Any] = {"blocks": blocks}
        if kind in ("svr", "enet", "lgbm") and cfg.pca:
            p["pca"] = cfg.pca
        if kind == "lgbm":
            p["n_jobs"] = cfg.n_jobs
        if kind == "enet" and cfg.interact_components and "generator" in names and len(names) > 1:
            widest = max((n for n in names if n != "generator"), key=lambda n: blocks[n][1] - blocks[n][0])
            p["interact"] = ("generator", widest, cfg.interact_components)
        specs.append(HeadSpec(kind, kind, p, tune=cfg.n_trials > 0))
    for name in cfg.fixed_heads or ():
        if name not in FIXED_PRESETS:
            raise ValueError(f"unknown fixed head {name!r}; known: {sorted(FIXED_PRESETS)}")
        kind, preset = FIXED_PRESETS[name]
        p = {"blocks": blocks, **preset}
        if p.get("group_target") and p["group_target"] not in names:
            p.pop("group_target")  # no generator block (e.g. prompt only): plain target scaling
        if cfg.pca and kind in ("svr", "enet", "lgbm"):
            p["pca"] = cfg.pca
        specs.append(HeadSpec(f"fixed:{name}", kind, p, tune=False))
    if cfg.block_head and len(names) > 1:
        for b in names:
            p = {"blocks": blocks, "use": b}
            if cfg.pca:
                p["pca"] = cfg.pca
            specs.append(HeadSpec(f"block:{b}", cfg.block_head, p, tune=False))
    return specs


class StackedModel:
    """Fitted base heads + non-negative linear meta-learner. Picklable."""

    def __init__(self, heads: dict[str, Any], meta: LinearRegression, info: dict):
        self.heads = heads
        self.meta = meta
        self.info = info

    @property
    def names(self) -> list[str]:
        return list(self.heads)

    def predict_heads(self, X) -> dict[str, np.ndarray]:
        return {n: h.predict(X) for n, h in self.heads.items()}

    def predict(self, X) -> np.ndarray:
        P = np.column_stack(list(self.predict_heads(X).values()))
        return self.meta.predict(P)

    def weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.meta.coef_)}


def _fold_main(pred, y) -> float:
    try:
        return main_score(pred, y)
    except MetricError:
        return 0.0


def _fit_meta(oof: np.ndarray, y: np.ndarray) -> LinearRegression:
    meta = LinearRegression(positive=True).fit(oof, y)
    if not np.any(meta.coef_ > 0):  # all heads useless (tiny data): fall back to a plain mean
        meta.coef_ = np.full(oof.shape[1], 1.0 / oof.shape[1])
        meta.intercept_ = float(np.mean(y) - oof.mean(0) @ meta.coef_)
    return meta


def tune_and_meta(X, y, groups, blocks, cfg: StackConfig, tag: str = "final") -> tuple[list[HeadSpec], LinearRegression, dict]:
    """Tune the heads on (X, y) and fit the meta-learner on their out-of-fold predictions there."""
    specs = base_specs(blocks, cfg)
    folds = make_folds(len(y), groups, cfg.tune_folds, cfg.seed, cfg.protocol)
    oof = np.zeros((len(y), len(specs)))
    info: dict[str, Any] = {"tuning_items": int(len(y)), "heads": {}}
    for j, spec in enumerate(tqdm(specs, desc=f"tune {tag}", leave=False)):
        t0 = time.perf_counter()
        if spec.tune:
            res = tune_head(spec.kind, X, y, groups, base_params=spec.params, n_trials=cfg.n_trials,
                            n_splits=cfg.tune_folds, seed=cfg.seed, protocol=cfg.protocol, storage=cfg.storage,
                            study_name=f"{tag}-{spec.name}-s{cfg.seed}", prune=cfg.prune)
            spec.params = res.params
            info["heads"][spec.name] = {"tuned_score": res.best_score, "trials": res.n_trials, "pruned": res.n_pruned}
        # out-of-fold predictions on the tuning set with the chosen parameters (same folds as the search)
        for tr, te in folds:
            oof[te, j] = make_head(spec.kind, **spec.params).fit(X[tr], y[tr]).predict(X[te])
        info["heads"].setdefault(spec.name, {})["oof_main"] = _fold_main(oof[:, j], y)
        info["heads"][spec.name]["seconds"] = time.perf_counter() - t0
        info["heads"][spec.name]["params"] = {k: v for k, v in spec.params.items() if k != "blocks"}
    meta = _fit_meta(oof, y)
    info["meta_weights"] = {s.name: float(w) for s, w in zip(specs, meta.coef_)}
    info["meta_oof_main"] = _fold_main(meta.predict(oof), y)
    return specs, meta, info


def fit_heads(specs: list[HeadSpec], X, y, desc: str = "fit") -> dict[str, Any]:
    return {s.name: make_head(s.kind, **s.params).fit(X, y) for s in tqdm(specs, desc=desc, leave=False)}


def resolve_nested(cfg: StackConfig, n: int) -> str:
    """The nesting scheme actually used for ``n`` labelled items."""
    if cfg.nested == "auto":
        return "full" if n < cfg.auto_full_below else "split"
    if cfg.nested not in ("split", "full"):
        raise ValueError(f"nested must be 'auto', 'split' or 'full', got {cfg.nested!r}")
    return cfg.nested


def _n_groups(groups, n: int, cfg: StackConfig) -> int:
    if groups is None or cfg.protocol != "grouped":
        return n
    return len(np.unique(np.asarray(groups)))


def fit_folds(cfg: StackConfig, groups, n: int, nested: str) -> StackConfig:
    """``cfg`` with outer/inner fold counts lowered to what the number of groups allows."""
    g = _n_groups(groups, n, cfg)
    if g < 2:
        raise ValueError(f"cross-validation needs at least 2 distinct groups (prompts), got {g} in {n} items")
    outer = min(cfg.outer_folds, g)
    # groups left for tuning: the held-apart share (split) or an outer training fold (full)
    g_tune = max(2, int(g * (cfg.tune_fraction if nested == "split" else (outer - 1) / outer)))
    inner = max(2, min(cfg.tune_folds, g_tune))
    if (outer, inner) != (cfg.outer_folds, cfg.tune_folds):
        log.warning("only %d groups: %d outer / %d tuning folds instead of %d / %d", g, outer, inner,
                    cfg.outer_folds, cfg.tune_folds)
        cfg = StackConfig(**{**cfg.to_dict(), "outer_folds": outer, "tune_folds": inner})
    return cfg


def _tuning_subset(groups, n: int, cfg: StackConfig, seed: int, fraction: bool = True) -> np.ndarray:
    """Whole groups for tuning: at most max_tune_items, and (split) at most tune_fraction of the items."""
    cap = cfg.max_tune_items
    if fraction:
        cap = min(cap, max(cfg.tune_folds * 4, int(cfg.tune_fraction * n)))
    g = groups if (groups is not None and cfg.protocol == "grouped") else np.arange(n)
    return subsample_groups(g, cap, seed)


def fit_stack(X, y, groups, blocks, cfg: StackConfig, tag: str = "final", tuned=None) -> StackedModel:
    """Tune on a subset of whole groups, fit the meta-learner there, refit all heads on everything.

    ``tuned``: (specs, meta, info) from an earlier tune_and_meta on the same subset (the
    ``split`` cross-validation tunes on exactly the subset this function would pick), to
    avoid tuning twice.
    """
    if tuned is None:
        # no held-apart fraction here: the final model (and each outer fold of nested=full)
        # tunes on up to max_tune_items of what it is given
        sub = _tuning_subset(groups, len(y), cfg, cfg.seed, fraction=False)
        g = _n_groups(None if groups is None else np.asarray(groups)[sub], len(sub), cfg)
        if g < cfg.tune_folds:
            if g < 2:
                raise ValueError(f"tuning needs at least 2 distinct groups (prompts), got {g} in {len(sub)} items")
            cfg = StackConfig(**{**cfg.to_dict(), "tune_folds": g})
        tuned = tune_and_meta(X[sub], y[sub], None if groups is None else np.asarray(groups)[sub], blocks, cfg, tag)
    specs, meta, info = tuned
    heads = fit_heads(specs, X, y, desc=f"fit {tag}")
    info["config"] = cfg.to_dict()
    info["blocks"] = blocks
    return StackedModel(heads, meta, info)


def cross_validate(X, y, groups, blocks, cfg: StackConfig) -> dict[str, Any]:
    """Honest out-of-fold predictions of the stack and of every base head (see module doc).

    Returns {"scored": indices scored, "stack": preds, "heads": {name: preds}, "folds": fold id,
    "info": ...}; predictions are aligned with ``scored``.
    """
    n = len(y)
    groups_arr = None if groups is None else np.asarray(groups)
    nested = resolve_nested(cfg, n)
    cfg = fit_folds(cfg, groups_arr, n, nested)
    if nested == "split":
        tune_idx = _tuning_subset(groups_arr, n, cfg, cfg.seed)
        rest = np.setdiff1d(np.arange(n), tune_idx)
        specs, meta, info = tune_and_meta(X[tune_idx], y[tune_idx],
                                          None if groups_arr is None else groups_arr[tune_idx], blocks, cfg, "cv")
        folds = make_folds(len(rest), None if groups_arr is None else groups_arr[rest], cfg.outer_folds,
                           cfg.seed + 1, cfg.protocol)
        heads_pred = {s.name: np.zeros(len(rest)) for s in specs}
        fold_id = np.zeros(len(rest), int)
        for k, (tr, te) in enumerate(tqdm(folds, desc="outer folds", leave=False)):
            train = np.concatenate([tune_idx, rest[tr]])
            fitted = fit_heads(specs, X[train], y[train], desc=f"outer {k}")
            for name, h in fitted.items():
                heads_pred[name][te] = h.predict(X[rest[te]])
            fold_id[te] = k
        stack = meta.predict(np.column_stack(list(heads_pred.values())))
        return {"scored": rest, "stack": stack, "heads": heads_pred, "folds": fold_id,
                "info": {"nested": "split", "tuning_set": info, "n_tuning_items": int(len(tune_idx)),
                         "outer_folds": cfg.outer_folds, "tune_folds": cfg.tune_folds},
                "tuned": (specs, meta, info)}
    folds = make_folds(n, groups_arr, cfg.outer_folds, cfg.seed + 1, cfg.protocol)
    stack = np.zeros(n)
    heads_pred: dict[str, np.ndarray] = {}
    fold_id = np.zeros(n, int)
    infos = []
    for k, (tr, te) in enumerate(tqdm(folds, desc="outer folds (nested)", leave=False)):
        model = fit_stack(X[tr], y[tr], None if groups_arr is None else groups_arr[tr], blocks,
                          StackConfig(**{**cfg.to_dict(), "seed": cfg.seed + 100 * (k + 1)}), tag=f"outer{k}")
        for name, p in model.predict_heads(X[te]).items():
            heads_pred.setdefault(name, np.zeros(n))[te] = p
        stack[te] = model.predict(X[te])
        fold_id[te] = k
        infos.append(model.info)
    return {"scored": np.arange(n), "stack": stack, "heads": heads_pred, "folds": fold_id,
            "info": {"nested": "full", "outer": infos, "outer_folds": cfg.outer_folds, "tune_folds": cfg.tune_folds}}


