"""Applicability domain: is an item's feature vector like the training items' (``in_domain``)?

A regression head extrapolates without limit on features far from anything it was trained on
(a page of text scored −24 on a 1–5 scale by the demo model), and nothing in the score says so.
:class:`DomainDetector` measures, per feature block the model reads, how far an item lies from
its nearest training items, and flags the ones farther than held-out training items ever are.

Per block (scikit-learn objects only, so the bundle stays data that skops loads without code):

* ``StandardScaler`` (a variance floor of a tenth of the block's median column spread, so a
  column that barely moved in training cannot blow up every new item), then ``PCA`` to at
  most :data:`N_COMPONENTS` components plus the norm of what the components leave out (an
  item unlike the training items lies off their subspace: projecting it would hide that);
* the mean distance to the ``n_neighbors`` nearest training items (at most ``max_reference``
  of them, drawn at random: the bundle keeps their embedded rows), from scikit-learn's
  ``euclidean_distances`` (BLAS) and a partial sort. Not ``NearestNeighbors.kneighbors``: its
  OpenMP backend took 150 ms to start for one query on a busy 2-core machine, 100x the work.

Calibration on out-of-fold items: the training items are split into grouped folds (by
prompt, as the cross-validation groups them); each fold is measured against detectors fitted
on the other folds, i.e. as new prompts/media. Each block's distance is divided by its median
out-of-fold distance, the item's score is the largest over the blocks, and the threshold is
the out-of-fold score that ``false_flag_rate`` (default 1%) of the items exceed (the conformal
rank ``ceil((n + 1)(1 - rate))``; below ``1/rate`` items the largest one: a false-flag rate
under ``1/(n + 1)`` cannot be calibrated). ``domain_score`` is that score over the threshold:
above 1 is out of domain.

The generator block (a one-hot of a name) has no distance worth the name; the prompt
embedding has one and is measured like a media block. A model that reads only the prompt and
generator therefore judges only the prompt (:attr:`DomainDetector.label_only`): the card and
the scores say so, since a text page with a familiar prompt is "in domain" to such a model.
"""
from __future__ import annotations

import numpy as np

#: PCA components kept per block (the residual norm is kept as one more coordinate)
N_COMPONENTS = 64
#: blocks whose kind is read from a label, not measured: the generator one-hot
UNMEASURED_KINDS = ("meta",)


def _block_fit(Z: np.ndarray, n_components: int, n_neighbors: int, seed: int):
    """(scaler, pca, reference rows embedded, k) for one block's training rows."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(Z)
    spread = scaler.scale_
    floor = 0.1 * float(np.median(spread)) if np.median(spread) > 0 else 1.0
    scaler.scale_ = np.maximum(spread, floor)  # WHY: see the module doc (a near-constant column)
    Zs = scaler.transform(Z)
    k = max(1, min(n_components, Zs.shape[0] - 1, Zs.shape[1]))
    pca = PCA(k, random_state=seed).fit(Zs)
    return scaler, pca, _embed(Zs, pca), min(n_neighbors, len(Zs))


def _embed(Zs: np.ndarray, pca) -> np.ndarray:
    """PCA scores plus the norm of the residual (the part of the item off the training subspace)."""
    s = pca.transform(Zs)
    resid = np.linalg.norm(Zs - pca.inverse_transform(s), axis=1)
    return np.column_stack([s, resid])


def _block_distance(Z: np.ndarray, scaler, pca, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of each row of ``Z`` to its ``k`` nearest reference rows."""
    from sklearn.metrics.pairwise import euclidean_distances

    d = euclidean_distances(_embed(scaler.transform(Z), pca), reference)
    return np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)


def conformal_threshold(scores: np.ndarray, rate: float) -> float:
    """The score that a fraction ``rate`` of exchangeable new items exceed: rank ceil((n+1)(1-rate))."""
    s = np.sort(np.asarray(scores, dtype=float))
    rank = int(np.ceil((len(s) + 1) * (1 - rate)))
    return float(s[min(rank, len(s)) - 1])


class DomainDetector:
    """Distances of items to the training items, per block, and the calibrated in/out decision.

    ``blocks``: {block name: [first column, end column)} of the blocks measured (the model's
    feature matrix is passed whole). ``fit(X, folds)`` calibrates on out-of-fold items of the
    given (grouped) folds (see the module doc); ``score(X)`` is the domain score (1 = the boundary), ``in_domain(X)``
    whether it is at most 1.
    """

    def __init__(self, blocks: dict[str, list[int]] | None = None, false_flag_rate: float = 0.01,
                 n_neighbors: int = 5, n_components: int = N_COMPONENTS, max_reference: int = 2000, seed: int = 0,
                 label_only: bool = False):
        self.blocks = blocks
        self.false_flag_rate = false_flag_rate
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.max_reference = max_reference
        self.seed = seed
        self.label_only = label_only  # every measured block is the prompt: nothing of the media is judged

    # ------------------------------------------------------------ fitting (training time only)
    def _reference(self, rows: np.ndarray, seed: int) -> np.ndarray:
        if len(rows) <= self.max_reference:
            return rows
        return np.sort(np.random.default_rng(seed).choice(rows, self.max_reference, replace=False))

    def _fit_blocks(self, X: np.ndarray, rows: np.ndarray, seed: int) -> dict:
        ref = self._reference(rows, seed)
        return {b: _block_fit(X[ref, a:e], self.n_components, self.n_neighbors, self.seed)
                for b, (a, e) in self.blocks.items()}

    def fit(self, X, folds) -> "DomainDetector":
        """Calibrate on ``folds`` ([(train rows, test rows)], grouped by prompt: regressors.trust_fit makes them),
        then fit each block on every row. The folds are given, not made here: scoring loads this class, and
        nothing of the fit (regressors.tuning) may come with it."""
        X = np.asarray(X, dtype=np.float64)
        if not self.blocks:
            raise ValueError("DomainDetector needs at least one block to measure")
        n = len(X)
        folds = list(folds)
        k = len(folds)
        if k < 2:
            raise ValueError(f"calibrating the domain needs at least 2 folds, got {k}")
        oof = np.zeros((n, len(self.blocks)))
        for f, (tr, te) in enumerate(folds):
            fitted = self._fit_blocks(X, tr, self.seed + f)
            for j, (b, (a, e)) in enumerate(self.blocks.items()):
                oof[te, j] = _block_distance(X[te, a:e], *fitted[b])
        med = np.median(oof, axis=0)
        self.block_scale_ = np.where(med > 0, med, 1.0)
        combined = (oof / self.block_scale_).max(axis=1)
        self.threshold_ = max(conformal_threshold(combined, self.false_flag_rate), 1e-12)
        self.oof_scores_ = combined / self.threshold_
        self.oof_flag_rate_ = float(np.mean(self.oof_scores_ > 1))
        self.n_training_ = n
        self.calibration_folds_ = k
        self.models_ = self._fit_blocks(X, np.arange(n), self.seed)
        return self

    # ------------------------------------------------------------ scoring
    def block_scores(self, X) -> dict[str, np.ndarray]:
        """Per block: distance over that block's median out-of-fold distance."""
        X = np.asarray(X, dtype=np.float64)
        return {b: _block_distance(X[:, a:e], *self.models_[b]) / s
                for (b, (a, e)), s in zip(self.blocks.items(), self.block_scale_)}

    def score(self, X) -> np.ndarray:
        """Domain score: the largest block score over the calibrated threshold (above 1: out of domain)."""
        return np.max(np.column_stack(list(self.block_scores(X).values())), axis=1) / self.threshold_

    def in_domain(self, X) -> np.ndarray:
        return self.score(X) <= 1.0

    def summary(self) -> dict:
        """What bundle.json and the card record."""
        return {"blocks": list(self.blocks), "label_only": bool(self.label_only),
                "false_flag_rate": self.false_flag_rate, "oof_flag_rate": self.oof_flag_rate_,
                "calibration_items": int(self.n_training_), "calibration_folds": int(self.calibration_folds_),
                "reference_items": int(min(self.n_training_, self.max_reference)), "n_neighbors": self.n_neighbors,
                "method": "mean distance to the nearest training items (standardised PCA scores + residual norm)"}


def measured_blocks(features: list[dict], kept: list[str]) -> dict[str, list[int]]:
    """{block: columns} of the kept blocks a detector measures (not the generator one-hot)."""
    out = {}
    for f in features:
        if f["block"] in kept and f.get("kind") not in UNMEASURED_KINDS and f.get("columns"):
            out[f["block"]] = [int(c) for c in f["columns"]]
    return out
