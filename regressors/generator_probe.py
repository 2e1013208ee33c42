"""Generator probe: the generator's probabilities from the content features, where it is unknown.

On T2VQA-DB the generator alone gives 0.545 main and generator + prompt 0.728 against
0.406 for the prompt alone, yet its val and test names hide the generator. The pixels
often tell which model made a clip (resolution, frame count, style), so a classifier on
the content blocks can stand in for the missing one-hot (the seed's SQL team learned such
a "domain distribution" as an auxiliary task).

* :class:`GeneratorProbe` predicts, from the content blocks (all but ``generator``), the
  probabilities over the generator block's known columns (the block's last column is the
  ``generator_unknown`` flag, see extractors.generator). Multinomial logistic regression on
  per-block standardised (PCA-reduced) features: cheap, calibrated enough, no tuning.
* :func:`oof_generator_block` is the training input for a stack that will see probe
  outputs at prediction time: each training row's generator block is replaced by the
  probabilities of a probe fitted on the other folds (grouped), so the heads learn how much
  to trust the probe, not the true one-hot it will never see on test items.
* :class:`ProbedModel` wraps a fitted stack: rows whose generator is unknown get the
  probe's probabilities in the generator block (``fill="missing"``, the default), or every
  row does (``fill="all"``, for a stack trained on :func:`oof_generator_block`).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from .heads import BlockTransformer, resolve_blocks
from .tuning import GROUP_BLOCK, make_folds


class GeneratorProbe(ClassifierMixin, BaseEstimator):
    """P(generator | content blocks); the target is read from the generator one-hot block of X."""

    def __init__(self, blocks=None, generator=GROUP_BLOCK, use=None, pca=64, C=1.0, max_iter=2000):
        self.blocks = blocks
        self.generator = generator
        self.use = use
        self.pca = pca
        self.C = C
        self.max_iter = max_iter

    def _content(self, n_features: int) -> list[str]:
        names = list(resolve_blocks(self.blocks, n_features))
        content = list(self.use) if self.use else [n for n in names if n != self.generator]
        if not content:
            raise ValueError(f"the generator probe needs a content block besides {self.generator!r}; blocks: {names}")
        return content

    def _gen_cols(self, n_features: int) -> tuple[int, int]:
        blocks = resolve_blocks(self.blocks, n_features)
        if self.generator not in blocks:
            raise ValueError(f"no {self.generator!r} block to probe; blocks: {sorted(blocks)}")
        return blocks[self.generator]

    def known_mask(self, X) -> np.ndarray:
        """Rows whose generator is known (the block's last column is the unknown flag)."""
        a, b = self._gen_cols(X.shape[1])
        return np.asarray(X)[:, b - 1] < 0.5

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        a, b = self._gen_cols(X.shape[1])
        known = self.known_mask(X)
        if known.sum() < 2:
            raise ValueError("the generator probe needs labelled rows with a known generator")
        self.n_columns_ = b - a
        target = np.argmax(X[known, a:b - 1], axis=1)
        self.classes_ = np.unique(target)
        self.transformer_ = BlockTransformer(blocks=self.blocks, use=self._content(X.shape[1]), pca=self.pca).fit(X[known])
        Z = self.transformer_.transform(X[known])
        if len(self.classes_) == 1:  # one generator only: nothing to learn, it is always that one
            self.model_ = None
        else:
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Z, target)
        return self

    def predict_block(self, X) -> np.ndarray:
        """[n, width of the generator block]: probabilities over the known generators, unknown flag 0."""
        check_is_fitted(self, "transformer_")
        X = np.asarray(X, dtype=np.float64)
        out = np.zeros((len(X), self.n_columns_))
        if self.model_ is None:
            out[:, self.classes_[0]] = 1.0
        else:
            out[:, self.model_.classes_] = self.model_.predict_proba(self.transformer_.transform(X))
        return out

    def predict_proba(self, X) -> np.ndarray:
        return self.predict_block(X)[:, self.classes_]

    def predict(self, X) -> np.ndarray:
        """Column index (in the generator block) of the most probable generator."""
        return np.argmax(self.predict_block(X), axis=1)


def fill_generator(X, probe: GeneratorProbe, rows=None) -> np.ndarray:
    """A copy of X whose generator block holds the probe's probabilities on ``rows`` (default: unknown ones)."""
    X = np.array(X, dtype=np.float64, copy=True)
    a, b = probe._gen_cols(X.shape[1])
    rows = ~probe.known_mask(X) if rows is None else rows
    if np.any(rows):
        X[rows, a:b] = probe.predict_block(X[rows])
    return X


def oof_generator_block(X, groups, blocks, *, n_splits: int = 5, seed: int = 0, protocol: str = "grouped",
                        **probe_params) -> np.ndarray:
    """X with every row's generator block replaced by out-of-fold probe probabilities (grouped folds)."""
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    folds = make_folds(len(X), groups, n_splits, seed, protocol)
    for tr, te in folds:
        probe = GeneratorProbe(blocks=blocks, **probe_params).fit(X[tr])
        a, b = probe._gen_cols(X.shape[1])
        out[te, a:b] = probe.predict_block(X[te])
    return out


class ProbedModel:
    """A fitted model (``predict(X)``) whose generator block is filled in by a probe first. Picklable."""

    def __init__(self, model, probe: GeneratorProbe, fill: str = "missing"):
        if fill not in ("missing", "all"):
            raise ValueError(f"fill must be 'missing' or 'all', got {fill!r}")
        self.model = model
        self.probe = probe
        self.fill = fill

    def _filled(self, X):
        rows = None if self.fill == "missing" else np.ones(len(X), bool)
        return fill_generator(X, self.probe, rows)

    def predict(self, X) -> np.ndarray:
        return self.model.predict(self._filled(X))

    def predict_heads(self, X) -> dict[str, np.ndarray]:
        return self.model.predict_heads(self._filled(X))

    @property
    def names(self) -> list[str]:
        return self.model.names

    @property
    def info(self) -> dict:
        return self.model.info

    def weights(self) -> dict[str, float]:
        return self.model.weights()


def probe_for_fit(X, groups, blocks, *, seed: int = 0, protocol: str = "grouped", n_splits: int = 5,
                  has_unknown_flag: bool = True):
    """(probe fitted on all labelled rows, {"oof_accuracy": ...}) for ``regressors fit --generator-probe``,
    or (None, {"skipped": why}) when there is no generator block or nothing else to read it from.

    ``has_unknown_flag``: whether the generator block ends with the ``generator_unknown`` column
    (a block with its vocabulary recorded, as extractors.generator writes it)."""
    names = list(blocks or {})
    if GROUP_BLOCK not in names or len(names) < 2:
        return None, {"skipped": f"needs a {GROUP_BLOCK!r} block and a content block; blocks: {names}"}
    if not has_unknown_flag:
        return None, {"skipped": f"the {GROUP_BLOCK!r} block records no vocabulary (no generator_unknown column); "
                                 "recompute it with `aigcq features ... --extractors generator`"}
    X = np.asarray(X, dtype=np.float64)
    probe = GeneratorProbe(blocks=blocks)
    known = probe.known_mask(X)
    truth = np.argmax(X[:, slice(*probe._gen_cols(X.shape[1]))][:, :-1], axis=1)
    hits = []
    for tr, te in make_folds(len(X), groups, n_splits, seed, protocol):
        tr, te = tr[known[tr]], te[known[te]]
        if len(te):
            hits.append(GeneratorProbe(blocks=blocks).fit(X[tr]).predict(X[te]) == truth[te])
    acc = float(np.concatenate(hits).mean()) if hits else float("nan")
    return probe.fit(X), {"oof_accuracy": acc, "training_rows": int(known.sum())}
