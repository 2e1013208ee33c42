"""Prediction intervals (``score_lo``, ``score_hi``) from the cross-validated residuals the fit already has.

Split conformal regression on out-of-fold residuals: every scored training item has an honest
prediction from heads that never saw it (``stacking.cross_validate``), so ``|y - ŷ| / σ`` over those
items is a calibration set of nonconformity scores, and the interval of a new item at level ``L``
is ``ŷ ± α_L σ``, where ``α_L`` is the score at rank ``ceil((n + 1) L)`` (crepes'
``ConformalRegressor`` rule; crepes computes the scores at fit time, and the test suite checks that
the stored ones give crepes' intervals). The final model is fitted on all items, a little more
than each fold's model saw, so its errors on new items are, if anything, smaller: the intervals err
on the wide side.

σ, the item's difficulty (locally adaptive intervals), is one of:

* ``standard``: 1 (every interval has the same width);
* ``spread``: how much the stack's heads disagree on the item (standard deviation of their
  predictions, each bounded to the training target range), plus the median spread: heads that
  extrapolate apart on an unfamiliar item widen its interval;
* ``distance``: the item's domain score (:mod:`regressors.domain`) plus its median.

:func:`regressors.trust_fit.fit_intervals` keeps the one with the narrowest mean interval at the
default level in a grouped cross-conformal check on the calibration items (all three have the
coverage by construction); the bundle records the widths and coverages of each.

Intervals are bounded to the training target range (as the scores are), and always hold the
score itself: ``score_lo <= score <= score_hi``.
"""
from __future__ import annotations

import numpy as np

DEFAULT_LEVEL = 0.9
MODES = ("standard", "spread", "distance")


def parse_level(value, name: str = "--level") -> float:
    """0.9, "0.9", 90, "90" or "90%" -> 0.9; ValueError with one line (naming ``name``) otherwise. A bare 1 is
    refused: 100% (no interval can promise it) or 1% (an interval of nearly no width) are both misreadings."""
    text = str(value).strip()
    pct = text.endswith("%")
    try:
        v = float(text.rstrip("%"))
    except ValueError:
        raise ValueError(f"{name} {value!r}: give a coverage such as 0.9 or 90%") from None
    if v == 1 and not pct:
        raise ValueError(f"{name} {value!r} is ambiguous (100% or 1%?): give a coverage such as 0.9 or 90%")
    if pct or v > 1:
        v = v / 100
    if not 0 < v < 1:
        raise ValueError(f"{name} {value!r}: the coverage must lie strictly between 0 and 100%")
    return v


def alpha_at(alphas_desc: np.ndarray, level: float) -> float:
    """crepes' rule: the calibration score at index int((1 - level)(n + 1)) - 1 of the descending scores
    (inf when there are too few calibration items for the level)."""
    i = int((1 - level) * (len(alphas_desc) + 1)) - 1
    return float(alphas_desc[i]) if i >= 0 else float("inf")


def head_spread(head_preds: dict[str, np.ndarray], y_min: float, y_max: float) -> np.ndarray:
    """Standard deviation of the heads' predictions, each bounded to the target range (NaN heads ignored)."""
    P = np.clip(np.column_stack([np.asarray(v, float) for v in head_preds.values()]), y_min, y_max)
    ok = np.isfinite(P).sum(axis=1) > 1
    out = np.zeros(len(P))
    out[ok] = np.nanstd(P[ok], axis=1)
    return out


class ConformalIntervals:
    """Calibrated nonconformity scores and the rule that turns them into intervals (see the module doc).

    Fitted state: ``alphas_`` (descending), ``mode_``, ``beta_`` (added to σ), ``y_min_``/``y_max_``.
    """

    def __init__(self, mode: str = "standard", level: float = DEFAULT_LEVEL):
        self.mode = mode
        self.level = level

    def fit(self, residuals, sigmas=None, y_min: float = -np.inf, y_max: float = np.inf) -> "ConformalIntervals":
        from crepes import ConformalRegressor

        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        residuals = np.asarray(residuals, float)
        self.mode_ = self.mode
        self.beta_ = 0.0
        if self.mode != "standard":
            sigmas = np.asarray(sigmas, float)
            self.beta_ = float(np.median(sigmas)) or 1.0
        cr = ConformalRegressor().fit(residuals, sigmas=None if self.mode == "standard" else sigmas + self.beta_)
        self.alphas_ = np.asarray(cr.alphas, float)
        self.n_calibration_ = int(len(residuals))
        self.y_min_, self.y_max_ = float(y_min), float(y_max)
        return self

    def sigma(self, difficulty) -> np.ndarray | float:
        return 1.0 if self.mode_ == "standard" else np.asarray(difficulty, float) + self.beta_

    def interval(self, pred, difficulty=None, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) around ``pred`` at ``level`` (default: the one fitted for), bounded to the target range,
        holding ``pred``."""
        pred = np.asarray(pred, float)
        half = alpha_at(self.alphas_, self.level if level is None else level) * self.sigma(difficulty)
        lo = np.clip(pred - half, self.y_min_, self.y_max_)
        hi = np.clip(pred + half, self.y_min_, self.y_max_)
        return np.minimum(lo, pred), np.maximum(hi, pred)
