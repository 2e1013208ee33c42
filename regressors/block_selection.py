"""Nested block selection: which feature blocks the stack's heads should see at all.

A bag of frozen features always holds weak and redundant blocks, and a head on all of
them pays for every one: an RBF kernel's distances are diluted by a block that carries
nothing, a linear head spends its budget on it. Measured before this module existed
(demo store, default stack): generator + nss 0.835, + effnet_lite0 0.785, + prompt_minilm
0.754 main.

:func:`select_blocks` scores block subsets with cheap untuned *proxy* heads (default SVR
and ElasticNet, averaged) by repeated grouped 5-fold on the rows it is given, and keeps the
smallest subset whose mean fold score is within one standard error of the paired
differences (at least ``tolerance``) of the best. The stack calls it on
its tuning set only (``stacking._run_tuning``), so nothing is chosen on a scored item;
the tuned heads and the per-block heads are then built on the kept blocks and a dropped
block has no say in the model at all.

Search: every non-empty subset while there are at most ``exhaustive_up_to`` of them
(5 blocks: 31), otherwise backward elimination (drop the block whose removal scores best while that
stays within the margin of the best set so far, then repeat).
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from .heads import make_head
from .metrics import MetricError, main_score
from .tuning import GROUP_BLOCK, make_folds, subsample_groups


def _proxy_params(subset: list[str], blocks: dict, pca: int | None) -> list[tuple[str, dict[str, Any]]]:
    """Untuned heads standing in for the stack (the hand-set defaults that tuning starts from)."""
    base: dict[str, Any] = {"blocks": blocks, "use": list(subset)}
    if pca:
        base["pca"] = pca
    svr = {**base, "gamma": 1.0 / len(subset)}
    if GROUP_BLOCK in subset and len(subset) > 1:
        svr["group_target"] = GROUP_BLOCK  # the generator's mean and spread, as tuning mostly picks
    return [("svr", svr), ("enet", dict(base))]


def subset_scores(X, y, folds_list, subset: list[str], blocks: dict, pca: int | None) -> np.ndarray:
    """Main score of the proxy heads' average on every test fold of every repeat (one value per fold)."""
    out = []
    for folds in folds_list:
        for tr, te in folds:
            preds = [make_head(kind, **p).fit(X[tr], y[tr]).predict(X[te])
                     for kind, p in _proxy_params(subset, blocks, pca)]
            try:
                out.append(float(main_score(np.mean(preds, axis=0), y[te])))
            except MetricError:  # constant predictions
                out.append(0.0)
    return np.asarray(out)


def _candidates(names: list[str]) -> list[list[str]]:
    return [list(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


# below this many rows the selection's folds are repeated (2 x 5 folds): on the demo store (134 training
# items, 11 photos) one 3-fold split favoured a useless block by 0.03 where 5 folds x 2 repeats did not
REPEAT_BELOW = 2000
# the proxies score subsets on at most this many rows (whole groups): the choice between blocks that help
# and blocks that do not is clear by then, and SVR's cost grows as rows^1.8
MAX_ITEMS = 2000


def select_blocks(X, y, groups, blocks: dict[str, list[int]], *, n_splits: int = 5, repeats: int | None = None,
                  seed: int = 0,
                  protocol: str = "grouped", pca: int | None = 128, tolerance: float = 0.005,
                  exhaustive_up_to: int = 31, max_items: int | None = MAX_ITEMS,
                  cache: dict | None = None) -> tuple[list[str], dict]:
    """(kept block names in their original order, info with every subset's score).

    A subset's score is the mean of its per-fold scores over ``repeats`` x ``n_splits``
    grouped folds (``repeats`` default: 2 below REPEAT_BELOW rows, else 1). A smaller subset
    is preferred unless the best beats it by more than the larger of ``tolerance`` and the
    standard error of their paired per-fold differences (a one-standard-error rule: on 150
    items one split into folds can favour a useless block by 0.1).

    ``cache``: a dict shared by calls on the same rows with the same seed (an ablation's rows
    within one outer fold), so a subset scored for one configuration is not scored again for
    another that offers it too.
    """
    t0 = time.perf_counter()
    names = list(blocks)
    if len(names) < 2:
        return names, {"kept": names, "dropped": [], "scores": {}, "search": "none", "seconds": 0.0}
    if max_items and len(y) > max_items:
        rows = subsample_groups(np.asarray(groups) if groups is not None and protocol == "grouped"
                                else np.arange(len(y)), max_items, seed)
        X, y = X[rows], np.asarray(y)[rows]
        groups = None if groups is None else np.asarray(groups)[rows]
    if repeats is None:
        repeats = 2 if len(y) < REPEAT_BELOW else 1
    if groups is not None and protocol == "grouped":
        n_splits = min(n_splits, len(np.unique(np.asarray(groups))))
    folds_list = [make_folds(len(y), groups, n_splits, seed + r, protocol) for r in range(max(1, repeats))]
    folds_scores: dict[tuple[str, ...], np.ndarray] = {}

    def score(subset) -> float:
        key = tuple(n for n in names if n in subset)
        if key not in folds_scores:
            ck = (key, len(y), seed, n_splits, repeats, protocol, pca)
            if cache is not None and ck in cache:
                folds_scores[key] = cache[ck]
            else:
                folds_scores[key] = subset_scores(X, y, folds_list, list(key), blocks, pca)
                if cache is not None:
                    cache[ck] = folds_scores[key]
        return float(folds_scores[key].mean())

    def within(key, best) -> bool:
        """Whether subset ``key`` scores within the margin of ``best``: the larger of ``tolerance`` and the
        standard error of their paired per-fold differences (same folds, so fold-to-fold noise cancels)."""
        d = folds_scores[best] - folds_scores[key]
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        return float(d.mean()) <= max(tolerance, se)

    if 2 ** len(names) - 1 <= exhaustive_up_to:
        search = "exhaustive"
        for c in _candidates(names):
            score(c)
        best = max(folds_scores, key=score)
        # the smallest subset within the margin of the best; among those, the best scoring
        kept = min((k for k in folds_scores if within(k, best)), key=lambda k: (len(k), -score(k)))
    else:
        search = "backward"
        kept = best = tuple(names)
        score(kept)
        while len(kept) > 1:
            trials = {b: score([n for n in kept if n != b]) for b in kept}
            drop, s = max(trials.items(), key=lambda kv: kv[1])
            smaller = tuple(n for n in kept if n != drop)
            if not within(smaller, best):
                break
            kept = smaller
            if s > score(best):
                best = kept
    info = {"kept": list(kept), "dropped": [n for n in names if n not in kept], "search": search,
            "tolerance": tolerance, "best": "+".join(best), "folds": len(folds_list) * n_splits, "rows": int(len(y)),
            "scores": {"+".join(k): float(v.mean()) for k, v in folds_scores.items()},
            "seconds": time.perf_counter() - t0}
    return list(kept), info
