"""Stacking per track, and the honest (nested) cross-validated score.

Base heads: tuned SVR, ElasticNet and LightGBM on all blocks and a tuned kNN on the
content blocks (all but the generator), plus one untuned head per extractor block ("bag
of features"). A non-negative linear meta-learner
(LinearRegression(positive=True)) combines their out-of-fold predictions.

Which blocks the heads read (nested block selection, on each tuning set): cheap untuned proxy
heads score block subsets (``regressors.block_selection``) and may *propose* a subset; the
heads are then tuned on all blocks and on the proposed subset, and the subset is kept only when
its tuned stack scores clearly better on the tuning set (out-of-fold, by ``select_margin``).
The proxies alone cost up to 0.065 main on label sets nobody tuned them on (issue 20; the
evaluation panel, ``benchmarks/panel.py``, docs/panel.md), where the tuned heads gain from the
prompt block the proxies rate useless; on the demo they still drop the blocks that hurt.

Bounded scores: every head's prediction is clipped to the range of the target it was fitted
on before the meta-learner sees it (when the meta-learner is fitted on out-of-fold predictions
and when it predicts), and the stack's prediction is clipped too (``StackedModel.bounds``).
A linear head extrapolates without limit on features unlike the training items; bounded, it
cannot drag the stack, and no score leaves the training range.

Three nesting schemes (``StackConfig.nested``), all keep every scored item out of
tuning and out of the meta-learner's fit:

* ``split`` (default, affordable on 2 cores): a random set of whole groups (prompts),
  at most ``max_tune_items`` items and ``tune_fraction`` of the data, is set aside as
  the tuning set T. Heads are tuned on T with inner grouped K-fold; the meta-learner
  is fitted on the best trials' out-of-fold predictions on T. The cross-validated
  score is then computed on the remaining items R only: for each outer fold of R the
  heads (fixed hyper-parameters) are refitted on T + the other folds of R and predict
  the held-out fold. T's items are never scored.
* ``cross``: ``split``, then the same with the roles of the two parts swapped (tune on
  R, score T), so that every item is scored, each by heads and weights tuned on the
  other part only. Twice the tuning of ``split``, on half the items each time.
* ``full``: classic nested CV. Inside each outer training fold, a tuning subset of at
  most ``max_tune_items`` items is drawn (the whole fold when smaller), heads are tuned
  and the meta-learner fitted as above, then the heads are refitted on the whole outer
  training fold. Every item is scored once. Costs ~``outer_folds`` x more.
* ``auto`` (default): ``full`` below ``auto_cross_from`` (1,000) labelled items, ``cross``
  from there to ``auto_full_below`` (3,000), ``split`` from there on. On a small set
  (FETV: 174 clips) ``split`` would score only ~70% of it and tune on a few dozen items,
  which makes both the score and the heads poor; on a large set ``full`` costs 5x the
  time for little gain; in between, ``cross`` scores every item at ~0.3x the time of
  ``full`` (2,982 items: 434 s vs 1,500 s on a busy 2-core machine, main 0.7375 vs 0.7358).

The final model is fitted on all labelled items: with ``split``/``cross`` on the reused tuning
(the first part's; ``final_tuning="retune"`` tunes once more on all items), with ``full`` tuned
on everything. Block selections, searches and refits
of the outer folds and of the final model are one graph of tasks on the worker pool
(``task_pool.run_graph``): a tuning set's searches start when its block selection ends, a
head's refits when its own search ends (the demo's fit: 40 -> 24 s on 2 cores, the same
predictions).

Few groups: grouped K-fold needs at least K groups; with fewer, the outer (and inner)
fold counts drop to the number of groups (a warning says so), and fewer than 2 groups
is an error.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from tqdm.auto import tqdm

from .block_selection import select_blocks
from .config import StackConfig  # noqa: F401 (re-exported: importers use stacking.StackConfig)
from .heads import make_head
from .metrics import MetricError, main_score
from .stacked_model import StackedModel, bounded_combine, clip_to  # noqa: F401 (re-exported; bundles before it moved name it here)
from .task_pool import MAX_AUTO_WORKERS, resolve_jobs, run_graph, run_tasks, task  # noqa: F401 (re-exported)
from .tuning import GROUP_BLOCK, make_folds, subsample_groups, tune_head

log = logging.getLogger(__name__)


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


def base_specs(blocks: dict[str, list[int]] | None, cfg: StackConfig, keep: list[str] | None = None) -> list[HeadSpec]:
    """The base heads for a block layout; ``keep``: the blocks they may read (default all)."""
    names = list(blocks) if blocks else []
    restricted = keep is not None and list(keep) != names
    if restricted:
        names = [n for n in names if n in keep]
    specs = []
    for kind in cfg.heads:
        p: dict[str, Any] = {"blocks": blocks}
        if restricted:
            p["use"] = list(names)
        if kind == "knn":
            # neighbours in the content blocks (the prompt, pixels), relative to each generator's mean and spread
            content = [n for n in names if n != GROUP_BLOCK]
            if names and not content:
                continue  # generator only: nothing to find neighbours in
            if content and len(content) < len(names):
                p["use"], p["group_target"] = content, GROUP_BLOCK
        if cfg.pca:
            p["pca"] = cfg.pca
        if kind == "lgbm":
            p["n_jobs"] = 1  # parallelism comes from the worker processes (StackConfig.n_jobs)
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
        if cfg.pca and kind in ("svr", "enet", "lgbm", "knn"):
            p["pca"] = cfg.pca
        specs.append(HeadSpec(f"fixed:{name}", kind, p, tune=False))
    if cfg.block_head and len(names) > 1:
        for b in names:
            p = {"blocks": blocks, "use": b}
            if cfg.pca:
                p["pca"] = cfg.pca
            specs.append(HeadSpec(f"block:{b}", cfg.block_head, p, tune=False))
    return specs


def target_bounds(y: np.ndarray, cfg: StackConfig) -> tuple[float, float] | None:
    """The range of the target a model is fitted on (None when ``cfg.bound_scores`` is off)."""
    return (float(np.min(y)), float(np.max(y))) if cfg.bound_scores else None


def _fold_main(pred, y) -> float:
    try:
        return main_score(pred, y)
    except MetricError:
        return 0.0


META_LEARNERS = ("positive", "mean", "best")


def _fit_meta(oof: np.ndarray, y: np.ndarray, kind: str = "positive", names: list[str] | None = None) -> LinearRegression:
    """The meta-learner on the heads' out-of-fold predictions (already bounded): ``positive`` (default),
    non-negative least squares with an intercept; ``mean``, the plain mean of the heads on several blocks
    (not the one-block heads, ``block:*``, when there are others); ``best``, the head whose out-of-fold
    predictions score best alone."""
    if kind not in META_LEARNERS:
        raise ValueError(f"meta_learner must be one of {META_LEARNERS}, got {kind!r}")
    meta = LinearRegression(positive=True).fit(oof, y)
    if not np.any(meta.coef_ > 0):  # all heads useless (tiny data): fall back to a plain mean
        kind, names = "mean", None
    if kind == "mean":
        use = np.array([not n.startswith("block:") for n in names]) if names else np.ones(oof.shape[1], bool)
        use = use if use.any() else np.ones(oof.shape[1], bool)
        meta.coef_ = use / use.sum()
        meta.intercept_ = float(np.mean(y) - oof.mean(0) @ meta.coef_)
    elif kind == "best":
        best = int(np.argmax([_fold_main(oof[:, j], y) for j in range(oof.shape[1])]))
        meta.coef_ = np.eye(oof.shape[1])[best]
        meta.intercept_ = 0.0
    return meta


# tuned heads from the slowest search to the fastest (measured at 4,000 x 2,000 on one core)
TUNING_COST_RANK = {"lgbm": 0, "svr": 1, "enet": 2, "knn": 3}


def _tune_one(spec: HeadSpec, X, y, groups, cfg: StackConfig, tag: str) -> tuple[dict, dict, np.ndarray]:
    """Tune one head (when asked) and return (params, info, out-of-fold predictions on the tuning folds)."""
    t0 = time.perf_counter()
    params, info, oof = dict(spec.params), {}, None
    if spec.tune:
        res = tune_head(spec.kind, X, y, groups, base_params=params, n_trials=cfg.n_trials,
                        n_splits=cfg.tune_folds, seed=cfg.seed, protocol=cfg.protocol, storage=cfg.storage,
                        study_name=f"{tag}-{spec.name}-s{cfg.seed}", prune=cfg.prune)
        params, oof = res.params, res.oof
        info = {"tuned_score": res.best_score, "trials": res.n_trials, "pruned": res.n_pruned}
    if oof is None:  # out-of-fold predictions on the tuning set with the chosen parameters (the search's folds)
        oof = np.zeros(len(y))
        for tr, te in make_folds(len(y), groups, cfg.tune_folds, cfg.seed, cfg.protocol):
            oof[te] = make_head(spec.kind, **params).fit(X[tr], y[tr]).predict(X[te])
    info["oof_main"] = _fold_main(oof, y)
    info["seconds"] = time.perf_counter() - t0
    info["params"] = {k: v for k, v in params.items() if k != "blocks"}
    return params, info, oof


@dataclass
class _Layout:
    """The heads of one tuning set on one block layout (all blocks, or those block selection proposes)."""
    tag: str
    keep: list[str] | None  # None: every block
    specs: list[HeadSpec]
    results: dict = field(default_factory=dict)  # spec index -> (params, info, out-of-fold predictions)


@dataclass
class _Tuning:
    """One tuning set, the config it tunes with, and its heads (laid out once its blocks are selected;
    each spec's params are filled in when its search ends)."""
    tag: str
    X: np.ndarray
    y: np.ndarray
    groups: Any
    cfg: StackConfig
    specs: list[HeadSpec] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    layouts: list[_Layout] = field(default_factory=list)
    block_names: list[str] = field(default_factory=list)
    stacked: tuple | None = None  # (specs, meta, info) once decided


def _select(X, y, groups, blocks, cfg: StackConfig) -> tuple[list[str] | None, dict | None]:
    """Nested block selection on a tuning set: (blocks kept, what was scored), or (None, None) when off."""
    if not (cfg.select_blocks and blocks and len(blocks) > 1):
        return None, None
    return select_blocks(X, y, groups, blocks, seed=cfg.seed, protocol=cfg.protocol, pca=cfg.pca,
                         tolerance=cfg.select_tolerance)


def _stack_layout(t: _Tuning, layout: _Layout) -> tuple[list[HeadSpec], LinearRegression, dict, np.ndarray, np.ndarray]:
    """The meta-learner of one layout fitted on its heads' bounded out-of-fold predictions on the tuning set:
    (specs, meta, heads' info, the stack's out-of-fold predictions there, and the same with the meta-learner
    itself cross-validated over the tuning folds: no layout gains from fitting more weights in-sample)."""
    res = [layout.results[j] for j in range(len(layout.specs))]
    bounds = target_bounds(t.y, t.cfg)
    oof = clip_to(np.column_stack([r[2] for r in res]), bounds)
    names = [s.name for s in layout.specs]
    meta = _fit_meta(oof, t.y, t.cfg.meta_learner, names)
    cv_pred = np.zeros(len(t.y))
    for tr, te in make_folds(len(t.y), t.groups, t.cfg.tune_folds, t.cfg.seed, t.cfg.protocol):  # the searches' folds
        cv_pred[te] = bounded_combine(_fit_meta(oof[tr], t.y[tr], t.cfg.meta_learner, names), oof[te], bounds)
    return (layout.specs, meta, {s.name: r[1] for s, r in zip(layout.specs, res)}, bounded_combine(meta, oof, bounds),
            cv_pred)


def _decide(t: _Tuning) -> int:
    """Which layout the tuning set keeps (index into t.layouts), recording the evidence in t.info.

    With one layout: that one. With two (all blocks, and the subset the proxies propose): the tuned
    stacks decide, by their main score on the tuning set with heads and meta-learner both out-of-fold
    (an in-sample meta-learner favours the layout with more heads: ~0.005 main with 6 heads against 3
    on 400 items; 0.08 with 8 against 6 on the demo's 134). The subset is kept only when its stack
    scores at least ``select_margin`` above all blocks': the untuned proxies misjudge blocks that only
    tuned heads use (AIGIQA-20K, 1,000 items, 6 generators: proxies 0.630 for the generator alone
    against 0.587 with the prompt, where the tuned stack gains 0.03 from the prompt), so they may only
    propose a drop, and a drop must pay clearly on the tuning set to be made (the comparison's own
    noise on a few hundred items is ~0.01)."""
    stacks = [_stack_layout(t, lay) for lay in t.layouts]
    in_sample = [_fold_main(st[3], t.y) for st in stacks]
    scores = [_fold_main(st[4], t.y) for st in stacks]
    pick = 0
    if len(stacks) == 2 and scores[1] >= scores[0] + t.cfg.select_margin:
        pick = 1
    specs, meta, heads_info, *_ = stacks[pick]
    sel = t.info.get("block_selection")
    if sel is not None and len(stacks) == 2:
        proposed = sel["kept"]
        order = t.block_names
        kept = proposed if pick == 1 else order
        sel.update({"proposed": proposed, "kept": kept, "dropped": [n for n in order if n not in kept],
                    "confirm": {"all_blocks": scores[0], "proposed": scores[1], "margin": t.cfg.select_margin,
                                "kept": "proposed" if pick == 1 else "all blocks",
                                "in_sample_meta": {"all_blocks": in_sample[0], "proposed": in_sample[1]}}})
    t.specs = specs
    t.info["heads"] = heads_info
    t.info["meta_weights"] = {s.name: float(w) for s, w in zip(specs, meta.coef_)}
    t.info["meta_oof_main"] = in_sample[pick]
    t.info["meta_cv_main"] = scores[pick]
    t.stacked = (specs, meta, t.info)
    return pick


def _run_tuning(tunings: list[_Tuning], blocks, cfg: StackConfig, desc: str, follow=None):
    """Per tuning set: select blocks, tune every head, fit the meta-learner on the heads' out-of-fold predictions.

    All of it is one graph of tasks on the pool (``cfg.n_jobs`` workers or Ray): a tuning set's
    searches start when its block selection ends, and ``follow(p, spec)`` gives the tasks that may
    start once that head's search on tuning set ``p`` is done (its refits): they start then, not
    after the slowest search. When block selection proposes dropping blocks (and ``cfg.select_confirm``),
    the heads are tuned on both layouts, all blocks and the proposed subset, and the refits of the layout
    kept (:func:`_decide`) start once every search of that tuning set is done.
    Returns ([(specs, meta, info)] per tuning set, {key: result} of every task).
    """
    tune = _tune_one
    if cfg.engine == "ray" and cfg.trial_workers > 1:  # each search split over Ray tasks on its stored study
        from .ray_tasks import _tune_shared

        tune = partial(_tune_shared, _tune_one)

    def searches(p: int, c: int) -> list:
        # longest search first, so that the cheap ones fill the gaps (with 2 workers, LightGBM's search
        # started last was the critical path: 364 of 542 s at 14,000 x 2,000); selections first, refits last
        t = tunings[p]
        lay = t.layouts[c]
        return [task(("tune", p, c, j), tune, spec, t.X, t.y, t.groups, t.cfg, lay.tag,
                     priority=(1, not spec.tune, TUNING_COST_RANK.get(spec.kind, 9), p, c))
                for j, spec in enumerate(lay.specs)]

    def then(key, result):
        if key[0] == "select":
            p = key[1]
            keep, selection = result
            t = tunings[p]
            t.info = {"tuning_items": int(len(t.y)), "heads": {}}
            t.block_names = list(blocks)
            if selection is not None:
                t.info["block_selection"] = selection
            drops = keep is not None and [b for b in blocks if b in keep] != list(blocks)
            if drops and not base_specs(blocks, t.cfg, keep):
                # no head can read the proposed subset (heads=knn, proposal: the generator alone): a stack of no
                # heads was a raw "need at least one array to concatenate" after the searches; every block stays
                selection.update({"proposed": list(keep), "kept": list(blocks), "dropped": [],
                                  "note": "no head of the stack reads the proposed subset: every block kept"})
                drops, keep = False, None
            if drops and t.cfg.select_confirm:
                # the proposed subset's studies get their own names (a shared --storage holds both)
                t.layouts = [_Layout(t.tag, None, base_specs(blocks, t.cfg)),
                             _Layout(f"{t.tag}-{'+'.join(keep)}", list(keep), base_specs(blocks, t.cfg, keep))]
            else:
                t.layouts = [_Layout(t.tag, keep, base_specs(blocks, t.cfg, keep))]
            return [x for c in range(len(t.layouts)) for x in searches(p, c)]
        if key[0] == "tune":
            _, p, c, j = key
            t = tunings[p]
            lay = t.layouts[c]
            lay.specs[j].params = result[0]
            lay.results[j] = result
            if len(t.layouts) == 1:
                return follow(p, lay.specs[j]) if follow else []
            if any(len(la.results) < len(la.specs) for la in t.layouts):
                return []  # the refits wait for the decision between the layouts
            chosen = t.layouts[_decide(t)]
            return [x for spec in chosen.specs for x in follow(p, spec)] if follow else []
        return []

    start = [task(("select", p), _select, t.X, t.y, t.groups, blocks, t.cfg, priority=(0, p))
             for p, t in enumerate(tunings)]
    done = run_graph(start, cfg.n_jobs, desc, cfg.engine, then)
    for t in tunings:
        if t.stacked is None:
            _decide(t)
    return [t.stacked for t in tunings], done


def _fit_one(spec: HeadSpec, X, y, train):
    """One head fitted on rows ``train``."""
    return make_head(spec.kind, **spec.params).fit(X[train], y[train])


def fit_heads(specs: list[HeadSpec], X, y, desc: str = "fit", n_jobs: int = 1, engine: str = "local") -> dict[str, Any]:
    rows = np.arange(len(y))
    fitted = run_tasks(_fit_one, [(s, X, y, rows) for s in specs], n_jobs, desc, engine)
    return {s.name: h for s, h in zip(specs, fitted)}


def resolve_nested(cfg: StackConfig, n: int) -> str:
    """The nesting scheme actually used for ``n`` labelled items."""
    if cfg.nested == "auto":
        if n >= cfg.auto_full_below:
            return "split"
        return "cross" if n >= cfg.auto_cross_from else "full"
    if cfg.nested not in ("split", "cross", "full"):
        raise ValueError(f"nested must be 'auto', 'split', 'cross' or 'full', got {cfg.nested!r}")
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
    g_tune = max(2, int(g * (cfg.tune_fraction if nested in ("split", "cross") else (outer - 1) / outer)))
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


def _model_tuning(X, y, groups, cfg: StackConfig, tag: str) -> _Tuning:
    """The tuning set of a model fitted on all of (X, y): whole groups, at most max_tune_items (no held-apart
    fraction: the final model, and each outer fold's model of nested=full, tunes on what it is given)."""
    sub = _tuning_subset(groups, len(y), cfg, cfg.seed, fraction=False)
    g_sub = None if groups is None else np.asarray(groups)[sub]
    g = _n_groups(g_sub, len(sub), cfg)
    if g < cfg.tune_folds:
        if g < 2:
            raise ValueError(f"tuning needs at least 2 distinct groups (prompts), got {g} in {len(sub)} items")
        cfg = StackConfig(**{**cfg.to_dict(), "tune_folds": g})
    return _Tuning(tag, X[sub], y[sub], g_sub, cfg)


def _stacked(heads: dict[str, Any], tuned, t: _Tuning, blocks, y_fit: np.ndarray) -> StackedModel:
    """The StackedModel of a tuning's heads, bounded to the range of ``y_fit``, the target they were fitted on."""
    specs, meta, info = tuned
    return StackedModel({s.name: heads[s.name] for s in specs}, meta,
                        {**info, "config": t.cfg.to_dict(), "blocks": blocks}, bounds=target_bounds(y_fit, t.cfg))


def fit_stack(X, y, groups, blocks, cfg: StackConfig, tag: str = "final", tuned=None) -> StackedModel:
    """Tune on a subset of whole groups, fit the meta-learner there, refit all heads on everything.

    ``tuned``: (specs, meta, info) from an earlier tuning on the same subset, to avoid tuning twice
    (cross_validate's "tuned": ``split`` tunes on exactly the subset this function would pick).
    """
    if tuned is not None:
        specs, meta, info = tuned
        heads = fit_heads(specs, X, y, desc=f"fit {tag}", n_jobs=cfg.n_jobs, engine=cfg.engine)
        return StackedModel(heads, meta, {**info, "config": cfg.to_dict(), "blocks": blocks},
                            bounds=target_bounds(y, cfg))
    t = _model_tuning(X, y, groups, cfg, tag)
    rows = np.arange(len(y))
    # each head is refitted on all rows as soon as its own search is done
    (tuned,), done = _run_tuning([t], blocks, cfg, f"tune + fit {tag}", follow=lambda p, spec: [
        task(("fit", spec.name), _fit_one, spec, X, y, rows, priority=(2, FIT_COST_RANK.get(spec.kind, 9)))])
    return _stacked({s.name: done[("fit", s.name)] for s in tuned[0]}, tuned, t, blocks, y)


# fitting cost of a head kind, most first: tasks are queued longest first so that the short ones fill the
# gaps at the end of a pass (a pass ends when its last task does)
FIT_COST_RANK = {"svr": 0, "lgbm": 1, "knn": 2, "enet": 3}


def _fit_predict(spec: HeadSpec, X, y, train, test=None, X_pred=None):
    """One head fitted on rows ``train``; (head, its predictions of rows ``test`` of X or of ``X_pred``,
    seconds the prediction took)."""
    head = _fit_one(spec, X, y, train)
    rows = X[test] if test is not None else X_pred
    if rows is None or len(rows) == 0:
        return head, None, 0.0
    t0 = time.perf_counter()
    pred = head.predict(rows)
    return head, pred, time.perf_counter() - t0


def cross_validate(X, y, groups, blocks, cfg: StackConfig, final_predict: np.ndarray | None = None) -> dict[str, Any]:
    """Honest out-of-fold predictions of the stack and of every base head (see module doc).

    Returns {"scored": indices scored, "stack": preds, "heads": {name: preds}, "folds": fold id,
    "info": ...}; predictions are aligned with ``scored``.

    ``final_predict`` (rows of features): also fit the final model (split/cross: what ``fit_stack``
    with the reused tuning gives; full: what ``fit_stack`` on everything gives) in the same graph of
    tasks as the outer folds, and predict these rows with it: adds "final" (the StackedModel),
    "final_predictions" and "final_in_sample" ((rows, predictions) of the training items not
    scored: split's tuning set; none otherwise). One graph keeps the workers busy to the end where
    four passes (searches, outer folds, final fit, predictions) each ended with idle workers: a
    head's refits start as soon as its own search is done (task_pool.run_graph).
    """
    n = len(y)
    cfg_in = cfg
    groups_arr = None if groups is None else np.asarray(groups)
    g = (lambda idx: None if groups_arr is None else groups_arr[idx])
    everything = np.arange(n)
    nested = resolve_nested(cfg, n)
    cfg = fit_folds(cfg, groups_arr, n, nested)
    if nested in ("split", "cross"):
        half_a = _tuning_subset(groups_arr, n, cfg, cfg.seed)
        half_b = np.setdiff1d(np.arange(n), half_a)
        # (tuning rows, scored rows): split scores the rest once; cross also swaps the roles, so that
        # every item is scored by heads and weights tuned on the other half only
        passes = [(half_a, half_b)]
        if nested == "cross":
            passes.append((half_b[_tuning_subset(g(half_b), len(half_b), cfg, cfg.seed, fraction=False)], half_a))
        tunings = [_Tuning("cv" if p == 0 else f"cv{p}", X[t], y[t], g(t), cfg) for p, (t, _) in enumerate(passes)]
        fold_sets = [make_folds(len(rest), g(rest), cfg.outer_folds, cfg.seed + 1 + p, cfg.protocol)
                     for p, (_, rest) in enumerate(passes)]
        scored = np.concatenate([rest for _, rest in passes])
        unscored = np.setdiff1d(np.arange(n), scored)  # split: the tuning set, predicted in-sample by the final model
        final_rows = np.vstack([X[unscored], final_predict]) if final_predict is not None else None
        if cfg.final_tuning not in ("reuse", "retune"):
            raise ValueError(f"final_tuning must be 'reuse' or 'retune', got {cfg.final_tuning!r}")
        # the tuning the final model's heads and meta-learner come from: the first pass's (reuse), or one more on
        # (up to max_tune_items of) every item (retune)
        final_from = len(passes) if cfg.final_tuning == "retune" else 0
        if final_rows is not None and final_from:
            tunings.append(_model_tuning(X, y, groups_arr, cfg_in, "final"))

        def refits(p: int, spec: HeadSpec) -> list:
            """Once a head's search on tuning set p is done: one task per outer fold (each fold's heads train on
            every item but the fold's own, the tuning rows included), and the final model's head."""
            rank = FIT_COST_RANK.get(spec.kind, 9)
            out = []
            if p < len(passes):
                rest = passes[p][1]
                others = np.setdiff1d(everything, rest)
                out = [task(("fold", p, k, spec.name), _fit_predict, spec, X, y, np.concatenate([others, rest[tr]]),
                            rest[te], priority=(2, rank, 1)) for k, (tr, te) in enumerate(fold_sets[p])]
            if p == final_from and final_rows is not None:
                out.append(task(("final", spec.name), _fit_predict, spec, X, y, everything, None, final_rows,
                                priority=(2, rank, 0)))
            return out

        tuned, done = _run_tuning(tunings, blocks, cfg, "tune + final fit + outer folds" if final_rows is not None
                                  else "tune + outer folds", follow=refits)
        final_specs = tuned[final_from][0] if final_rows is not None else []
        final_results = [done[("final", s.name)] for s in final_specs]
        heads_pred: dict[str, np.ndarray] = {}
        stack, fold_id = np.zeros(len(scored)), np.zeros(len(scored), int)
        at = 0
        for p, ((_, rest), folds, (specs, meta, _)) in enumerate(zip(passes, fold_sets, tuned)):
            part = {s.name: np.zeros(len(rest)) for s in specs}
            others = np.setdiff1d(everything, rest)
            for k, (tr, te) in enumerate(folds):
                for s in specs:
                    part[s.name][te] = done[("fold", p, k, s.name)][1]
                fold_id[at + te] = k + p * len(fold_sets[0])
                # bounded to the range of the target the fold's heads were fitted on (never the held-out fold's)
                bounds = target_bounds(y[np.concatenate([others, rest[tr]])], cfg)
                stack[at + te] = bounded_combine(meta, np.column_stack([part[s.name][te] for s in specs]), bounds)
            for name, v in part.items():  # a head missing from one pass (e.g. after block selection) scores NaN there
                heads_pred.setdefault(name, np.full(len(scored), np.nan))[at:at + len(rest)] = v
            at += len(rest)
        info = {"nested": nested, "tuning_set": tuned[0][2], "n_tuning_items": int(len(passes[0][0])),
                "outer_folds": cfg.outer_folds, "tune_folds": cfg.tune_folds}
        if nested == "cross":
            info["tuning_set_swapped"] = tuned[1][2]
        by_index = np.argsort(scored, kind="stable")  # scored items in index order
        out = {"scored": scored[by_index], "stack": stack[by_index], "folds": fold_id[by_index],
               "heads": {k: v[by_index] for k, v in heads_pred.items()}, "info": info, "tuned": tuned[0],
               "tuning_rows": [t for t, _ in passes]}
        if final_specs:
            specs, meta, tinfo = tuned[final_from]
            model = StackedModel({s.name: r[0] for s, r in zip(specs, final_results)}, meta,
                                 {**tinfo, "config": cfg_in.to_dict(), "blocks": blocks}, bounds=target_bounds(y, cfg))
            pred = model.combine({s.name: r[1] for s, r in zip(specs, final_results)}) if len(final_rows) else np.zeros(0)
            out["final"] = model
            out["final_in_sample"] = (unscored, pred[:len(unscored)])
            out["final_predictions"] = pred[len(unscored):]
            # one process predicting these rows with every head (what a user's predict takes), per row
            out["final_predict_s_per_row"] = sum(r[2] for r in final_results) / max(len(final_rows), 1)
        return out
    # full: every outer fold's model tuned inside its training fold, as fit_stack would (its own seed), and
    # the final model (when asked) tuned on everything: all of them one graph of tasks on the pool
    folds = make_folds(n, groups_arr, cfg.outer_folds, cfg.seed + 1, cfg.protocol)
    tunings = [_model_tuning(X[tr], y[tr], g(tr), StackConfig(**{**cfg.to_dict(), "seed": cfg.seed + 100 * (k + 1)}),
                             f"outer{k}") for k, (tr, _) in enumerate(folds)]
    if final_predict is not None:
        tunings.append(_model_tuning(X, y, groups_arr, cfg_in, "final"))

    def refits(p: int, spec: HeadSpec) -> list:
        rank = FIT_COST_RANK.get(spec.kind, 9)
        if p < len(folds):  # the outer fold's head, fitted on its training fold, predicts the held-out fold
            tr, te = folds[p]
            return [task(("fold", p, spec.name), _fit_predict, spec, X, y, tr, te, priority=(2, rank, 1))]
        return [task(("final", spec.name), _fit_predict, spec, X, y, everything, None, final_predict,
                     priority=(2, rank, 0))]

    tuned, done = _run_tuning(tunings, blocks, cfg, "outer folds (nested)" + (" + final fit" if final_predict is not None
                                                                              else ""), follow=refits)
    stack = np.zeros(n)
    heads_pred: dict[str, np.ndarray] = {}
    fold_id = np.zeros(n, int)
    infos = []
    for k, (_, te) in enumerate(folds):
        model = _stacked({s.name: done[("fold", k, s.name)][0] for s in tuned[k][0]}, tuned[k], tunings[k], blocks,
                         y[folds[k][0]])
        head_preds = {s.name: done[("fold", k, s.name)][1] for s in tuned[k][0]}
        for name, p in head_preds.items():
            # NaN where an outer fold's model lacks this head (its block selection dropped the block)
            heads_pred.setdefault(name, np.full(n, np.nan))[te] = p
        stack[te] = model.combine(head_preds)
        fold_id[te] = k
        infos.append(model.info)
    out = {"scored": np.arange(n), "stack": stack, "heads": heads_pred, "folds": fold_id,
           "info": {"nested": "full", "outer": infos, "outer_folds": cfg.outer_folds, "tune_folds": cfg.tune_folds}}
    if final_predict is not None:
        specs = tuned[-1][0]
        final = {s.name: done[("final", s.name)] for s in specs}
        model = _stacked({name: r[0] for name, r in final.items()}, tuned[-1], tunings[-1], blocks, y)
        out["final"] = model
        out["final_in_sample"] = (everything[:0], np.zeros(0))  # every training item is scored
        out["final_predictions"] = (model.combine({name: r[1] for name, r in final.items()}) if len(final_predict)
                                    else np.zeros(0))
        out["final_predict_s_per_row"] = sum(r[2] for r in final.values()) / max(len(final_predict), 1)
    return out
