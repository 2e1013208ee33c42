"""Regression heads: scikit-learn estimators that know the feature blocks.

A feature matrix is the concatenation of extractor outputs ("blocks"). ``blocks`` maps
a block name (an extractor name) to its column range ``[start, stop)``; ``None`` means
one block named ``all``. Every head runs the same preprocessing
(:class:`BlockTransformer`): per-block standardisation, optional per-block PCA, an
optional per-block weight, and optionally an interaction block (one-hot of a block such
as ``generator`` times the leading components of another, e.g. the prompt embedding:
a per-generator slope for a linear head). ``use`` restricts a head to some blocks,
which is how "one head per block" (bag of features) is built.

Heads standardise the target internally so one search space fits MOS on 0-5 and
on 0-100 alike. ``__init__`` only stores parameters; fitted state ends in ``_``.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import ElasticNet
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted, validate_data


def blocks_from_dims(dims: dict[str, int]) -> dict[str, list[int]]:
    """{'generator': 16, 'prompt_minilm': 384} -> {'generator': [0, 16], 'prompt_minilm': [16, 400]}."""
    out, start = {}, 0
    for name, d in dims.items():
        out[name] = [start, start + int(d)]
        start += int(d)
    return out


def resolve_blocks(blocks: dict | None, n_features: int, use=None) -> dict[str, tuple[int, int]]:
    """Validate a block map against the matrix width and apply ``use``."""
    if blocks is None:
        resolved = {"all": (0, n_features)}
    else:
        resolved = {str(k): (int(v[0]), int(v[1])) for k, v in dict(blocks).items()}
        for name, (a, b) in resolved.items():
            if not 0 <= a < b <= n_features:
                raise ValueError(f"block {name!r} spans columns [{a}, {b}) but X has {n_features} columns")
    if use is not None:
        wanted = [use] if isinstance(use, str) else list(use)
        missing = [u for u in wanted if u not in resolved]
        if missing:
            raise ValueError(f"use={missing[0]!r} is not a block; blocks: {sorted(resolved)}")
        resolved = {k: resolved[k] for k in wanted}
    return resolved


_PCA_CACHE: "OrderedDict[tuple, PCA]" = OrderedDict()
_PCA_CACHE_SIZE = 32


def _cached_pca(Z: np.ndarray, n_comp, random_state) -> PCA:
    """PCA fitted on Z, reused when the same block of the same rows comes again.

    Tuning refits a head for every trial on the same folds; the block PCA does not depend
    on the hyper-parameters searched, and on 2 cores it was most of a trial's time
    (randomised SVD of 2,700 x 512, six blocks, per trial and fold). Keyed by a hash of
    the standardised block, so different rows or columns never share an entry.
    """
    key = (hashlib.blake2b(np.ascontiguousarray(Z).view(np.uint8), digest_size=16).hexdigest(), Z.shape,
           n_comp, random_state)
    pca = _PCA_CACHE.get(key)
    if pca is None:
        pca = PCA(n_components=n_comp, random_state=random_state, svd_solver="auto").fit(Z)
        _PCA_CACHE[key] = pca
        while len(_PCA_CACHE) > _PCA_CACHE_SIZE:
            _PCA_CACHE.popitem(last=False)
    else:
        _PCA_CACHE.move_to_end(key)
    return pca


class BlockTransformer(TransformerMixin, BaseEstimator):
    """Per-block standardise -> optional PCA -> weight; optional interaction block.

    pca: None/0 (off), int (components, applied to blocks wider than that) or float in
    (0, 1) (explained variance). balance: divide each block by sqrt(its width) so a
    16-column one-hot and a 1,024-column embedding start with equal say in an RBF
    kernel. weights: {block: factor} on top of that. interact: (onehot_block,
    other_block, k): adds onehot x first k standardised columns of the other block.
    """

    def __init__(self, blocks=None, use=None, pca=None, balance=False, weights=None, interact=None, random_state=0):
        self.blocks = blocks
        self.use = use
        self.pca = pca
        self.balance = balance
        self.weights = weights
        self.interact = interact
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        self.blocks_ = resolve_blocks(self.blocks, X.shape[1], self.use)
        self.steps_ = {}
        for name, (a, b) in self.blocks_.items():
            Z = X[:, a:b]
            mu = Z.mean(0)
            sd = Z.std(0)
            sd[sd < 1e-12] = 1.0  # constant columns stay constant (zero) rather than NaN
            Z = (Z - mu) / sd
            pca = None
            n_comp = self.pca
            if n_comp and not (isinstance(n_comp, (int, np.integer)) and Z.shape[1] <= n_comp):
                if isinstance(n_comp, (int, np.integer)):
                    n_comp = int(min(n_comp, Z.shape[0], Z.shape[1]))
                pca = _cached_pca(Z, n_comp, self.random_state)
                Z = pca.transform(Z)
            scale = 1.0 / np.sqrt(Z.shape[1]) if self.balance else 1.0
            scale *= float((self.weights or {}).get(name, 1.0))
            self.steps_[name] = (mu, sd, pca, scale)
        if self.interact:
            onehot, other, k = self.interact
            all_blocks = resolve_blocks(self.blocks, X.shape[1])
            for n in (onehot, other):
                if n not in all_blocks:
                    raise ValueError(f"interact names block {n!r}, which is not among {sorted(all_blocks)}")
            a, b = all_blocks[other]
            Z = X[:, a:b]
            mu, sd = Z.mean(0), Z.std(0)
            sd[sd < 1e-12] = 1.0
            pca = PCA(n_components=int(min(k, Z.shape[0], Z.shape[1])), random_state=self.random_state).fit((Z - mu) / sd)
            self.interact_ = (all_blocks[onehot], (a, b), mu, sd, pca)
        else:
            self.interact_ = None
        return self

    def transform(self, X):
        check_is_fitted(self, "steps_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        parts = []
        for name, (a, b) in self.blocks_.items():
            mu, sd, pca, scale = self.steps_[name]
            Z = (X[:, a:b] - mu) / sd
            if pca is not None:
                Z = pca.transform(Z)
            parts.append(Z * scale)
        if self.interact_ is not None:
            (oa, ob), (a, b), mu, sd, pca = self.interact_
            comps = pca.transform((X[:, a:b] - mu) / sd)
            comps /= np.sqrt(pca.explained_variance_[None, :]) + 1e-12  # unit variance per component
            onehot = X[:, oa:ob]
            parts.append((onehot[:, :, None] * comps[:, None, :]).reshape(len(X), -1))
        return np.hstack(parts)


class _BlockHead(RegressorMixin, BaseEstimator):
    """Shared fit/predict: BlockTransformer -> model on the standardised target."""

    _transform_params = ("blocks", "use", "pca", "balance", "weights", "interact")

    def _model(self, n_rows: int = 0, n_cols: int = 0):  # pragma: no cover - abstract
        raise NotImplementedError

    def _transformer(self) -> BlockTransformer:
        kw = {p: getattr(self, p, None) for p in self._transform_params}
        kw["balance"] = bool(kw["balance"])
        return BlockTransformer(**kw, random_state=getattr(self, "random_state", 0))

    def _group_ids(self, X) -> np.ndarray | None:
        """Row -> group (argmax of the one-hot block named by ``group_target``), or None."""
        name = getattr(self, "group_target", None)
        if not name:
            return None
        blocks = resolve_blocks(self.blocks, X.shape[1])
        if name not in blocks:
            raise ValueError(f"group_target={name!r} is not a block; blocks: {sorted(blocks)}")
        a, b = blocks[name]
        return np.argmax(X[:, a:b], axis=1)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"target has {int((~np.isfinite(y)).sum())} NaN/inf values; drop unlabelled items first")
        self.transformer_ = self._transformer().fit(X)
        self.y_mean_ = float(y.mean())
        self.y_scale_ = float(y.std()) or 1.0
        # per-group offset and scale (e.g. per generator): the model then learns the within-group
        # deviation in group-specific units; unseen groups fall back to the global mean/scale
        self.group_stats_ = {}
        gid = self._group_ids(X)
        mean, scale = np.full(len(y), self.y_mean_), np.full(len(y), self.y_scale_)
        if gid is not None:
            for g in np.unique(gid):
                m = gid == g
                if m.sum() >= 2 and y[m].std() > 0:
                    self.group_stats_[int(g)] = (float(y[m].mean()), float(y[m].std()))
                    mean[m], scale[m] = self.group_stats_[int(g)]
        Z = self.transformer_.transform(X)
        self.model_ = self._model(*Z.shape).fit(Z, (y - mean) / scale)
        return self

    def _predict_model(self, Z: np.ndarray) -> np.ndarray:
        return self.model_.predict(Z)

    def predict(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = self._predict_model(self.transformer_.transform(X))
        gid = self._group_ids(X)
        if gid is None or not self.group_stats_:
            return z * self.y_scale_ + self.y_mean_
        stats = np.array([self.group_stats_.get(int(g), (self.y_mean_, self.y_scale_)) for g in gid])
        return z * stats[:, 1] + stats[:, 0]


# Memory for one block of kernel values when an RBF SVR predicts: rows x support vectors x 8 bytes.
RBF_KERNEL_BLOCK_BYTES = 64 * 2**20


def rbf_svr_predict(svr: SVR, Z: np.ndarray) -> np.ndarray:
    """``svr.predict(Z)`` for a fitted RBF ``SVR`` with a numeric gamma, as BLAS matrix products.

    libsvm's predict evaluates the kernel one row and one support vector at a time in a scalar
    loop: 1.2 ms per row against 10,871 support vectors at 144 columns (AIGIQA-20K, generator +
    MiniLM). The same sum, sum_i dual_coef_i * exp(-gamma * |z - sv_i|^2) + intercept, computed
    from squared distances as matrix products took 0.23 ms per row and agreed to 3e-14.
    """
    sv = svr.support_vectors_
    coef = svr.dual_coef_[0]
    sv_sq = np.einsum("ij,ij->i", sv, sv)[None, :]
    rows = max(1, RBF_KERNEL_BLOCK_BYTES // (8 * max(1, len(sv))))
    out = np.empty(len(Z))
    for a in range(0, len(Z), rows):
        K = euclidean_distances(Z[a:a + rows], sv, Y_norm_squared=sv_sq, squared=True)
        np.exp(K * -float(svr.gamma), out=K)
        out[a:a + rows] = K @ coef
    return out + svr.intercept_[0]


class SVRHead(_BlockHead):
    """RBF (or other kernel) SVR on balanced, standardised blocks."""

    def __init__(self, C=1.0, epsilon=0.1, gamma=1.0, kernel="rbf", blocks=None, use=None, pca=None,
                 balance=True, weights=None, interact=None, group_target=None, cache_size=1000):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.kernel = kernel
        self.blocks = blocks
        self.use = use
        self.pca = pca
        self.balance = balance
        self.weights = weights
        self.interact = interact
        self.group_target = group_target
        self.cache_size = cache_size

    def _model(self, n_rows: int = 0, n_cols: int = 0):
        # with balance=True every block has unit mean squared norm, so gamma ~ 1/(#blocks) is a sane scale
        return SVR(C=self.C, epsilon=self.epsilon, gamma=self.gamma, kernel=self.kernel, cache_size=self.cache_size)

    def _predict_model(self, Z: np.ndarray) -> np.ndarray:
        m = self.model_
        if m.kernel == "rbf" and isinstance(m.gamma, (int, float)) and len(m.support_vectors_):
            return rbf_svr_predict(m, Z)
        return m.predict(Z)


class ElasticNetHead(_BlockHead):
    """Linear head; with ``interact`` it learns per-generator slopes on the prompt components."""

    def __init__(self, alpha=1e-3, l1_ratio=0.5, blocks=None, use=None, pca=None, balance=False, weights=None,
                 interact=None, group_target=None, max_iter=5000, random_state=0):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.blocks = blocks
        self.use = use
        self.pca = pca
        self.balance = balance
        self.weights = weights
        self.interact = interact
        self.group_target = group_target
        self.max_iter = max_iter
        self.random_state = random_state

    # coordinate descent on a precomputed Gram matrix: the same solution, 40-100x faster when there are
    # many more rows than columns (measured: 14,000 x 848, alpha 1e-3: 21 s -> 0.5 s; 1e-4: 149 s -> 1.6 s);
    # above this width the p x p Gram itself gets too big and slow
    _GRAM_MAX_COLUMNS = 4096

    def _model(self, n_rows: int = 0, n_cols: int = 0):
        gram = n_rows > n_cols and n_cols <= self._GRAM_MAX_COLUMNS
        return ElasticNet(alpha=self.alpha, l1_ratio=self.l1_ratio, max_iter=self.max_iter, tol=1e-4,
                          selection="cyclic", random_state=self.random_state, precompute=gram)

    def fit(self, X, y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # a tuning trial with tiny alpha may not converge; that is scored, not fatal
            warnings.simplefilter("ignore", ConvergenceWarning)
            super().fit(X, y)
        self.n_iter_ = self.model_.n_iter_  # sklearn convention for estimators with max_iter
        return self


class LGBMHead(_BlockHead):
    """Gradient-boosted trees (LightGBM); learns generator x prompt interactions by itself.

    max_bin 63 rather than LightGBM's 255: on dense embedding features the histograms are most
    of the cost, and 63 bins halved the time at the same score (AIGIQA-20K generator + MiniLM,
    grouped 5-fold, 300 trees: 0.7448 vs 0.7451, 35 s vs 69 s).
    """

    def __init__(self, n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=20, subsample=0.8,
                 colsample_bytree=0.8, reg_lambda=0.0, max_bin=63, blocks=None, use=None, pca=None, n_jobs=1,
                 random_state=0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.blocks = blocks
        self.use = use
        self.pca = pca
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _model(self, n_rows: int = 0, n_cols: int = 0):
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples, subsample=self.subsample, subsample_freq=1,
            colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda, max_bin=self.max_bin,
            n_jobs=self.n_jobs, random_state=self.random_state, verbose=-1,
        )


class CosineWeights:
    """Neighbour weights from cosine distances: similarity**power, so near-duplicate prompts dominate.

    A class rather than a closure so that fitted heads pickle (model files, worker processes).
    """

    def __init__(self, power: float):
        self.power = float(power)

    def __call__(self, dist: np.ndarray) -> np.ndarray:
        return np.maximum(1.0 - dist, 1e-6) ** self.power


class KNNHead(_BlockHead):
    """Mean target of the most similar items (cosine k-nearest neighbours, similarity-weighted).

    Meant for a prompt embedding: with ``group_target='generator'`` and ``use`` = the prompt
    block it predicts "how did prompts like this one fare, relative to their generator's
    mean", in units of this generator's spread. A different inductive bias from the kernel
    and linear heads (local, no smoothness across the whole space), which is what a stack
    wants; on AIGIQA-20K (generator + MiniLM, grouped 5-fold, untuned) it alone reached 0.751
    (untuned SVR 0.746) and added 0.003 to the plain average of ridge, SVR and LightGBM.
    """

    def __init__(self, n_neighbors=100, power=4.0, blocks=None, use=None, pca=None, group_target=None):
        self.n_neighbors = n_neighbors
        self.power = power
        self.blocks = blocks
        self.use = use
        self.pca = pca
        self.group_target = group_target

    def _model(self, n_rows: int = 0, n_cols: int = 0):
        from sklearn.neighbors import KNeighborsRegressor

        k = max(1, min(int(self.n_neighbors), n_rows or int(self.n_neighbors)))
        return KNeighborsRegressor(n_neighbors=k, weights=CosineWeights(self.power), metric="cosine",
                                   algorithm="brute")

    # query-by-train distances are computed in chunks of this many MB (scikit-learn's default is
    # 1 GB, which took a `make regress` process on AIGIQA-20K to 2.9 GB when predicting 6,000 items)
    WORKING_MEMORY_MB = 128

    def predict(self, X):
        from sklearn import config_context

        with config_context(working_memory=self.WORKING_MEMORY_MB):
            return super().predict(X)


HEADS: dict[str, type[_BlockHead]] = {"svr": SVRHead, "enet": ElasticNetHead, "lgbm": LGBMHead, "knn": KNNHead}


def make_head(kind: str, **params: Any) -> _BlockHead:
    try:
        cls = HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown head {kind!r}; known: {sorted(HEADS)}") from None
    return cls(**params)
