"""Fitting the trust columns at training time (``in_domain``, ``score_lo``/``score_hi``; see regressors.trust).

Kept apart from regressors.trust, which scoring imports: this module builds grouped folds
(regressors.tuning) and runs crepes, neither of which a scored bundle needs.
"""
from __future__ import annotations

import numpy as np

from .conformal import DEFAULT_LEVEL, ConformalIntervals, alpha_at, head_spread
from .domain import DomainDetector, measured_blocks
from .tuning import make_folds

#: folds of the domain detector's out-of-fold calibration and of the intervals' cross-conformal check
FOLDS = 5


def _folds(n: int, groups, seed: int, protocol: str) -> list:
    """Grouped (by prompt) folds, as many as the groups allow (at most FOLDS)."""
    grouped = groups is not None and protocol == "grouped"
    k = min(FOLDS, len(np.unique(groups)) if grouped else n)
    if k < 2:
        raise ValueError(f"calibrating needs at least 2 groups, got {k}")
    return make_folds(n, groups if grouped else None, k, seed, "grouped" if grouped else "random")


def _spread_heads(model) -> list[str]:
    """The heads whose disagreement is the ``spread`` difficulty: those the meta-learner weighs."""
    try:
        weights = model.weights()
    except AttributeError:
        return []
    return [n for n, w in weights.items() if w > 0]


def fit_trust(model, X, y, groups, info: dict, cv: dict, seed: int = 0, protocol: str = "grouped",
              false_flag_rate: float = 0.01, level: float = DEFAULT_LEVEL) -> dict:
    """Fit the domain detector and the intervals, attach them to ``model``; returns what bundle.json records."""
    y = np.asarray(y, float)
    y_min, y_max = float(np.min(y)), float(np.max(y))
    kept = info.get("kept_blocks") or [f["block"] for f in info["features"]]
    blocks = measured_blocks(info["features"], kept)
    kinds = {f["block"]: f.get("kind") for f in info["features"]}
    out: dict = {}
    oof_distance = None
    if blocks:
        det = DomainDetector(blocks, false_flag_rate=false_flag_rate, seed=seed,
                             label_only=all(kinds.get(b) == "text" for b in blocks)).fit(
            X, _folds(len(X), groups, seed, protocol))
        oof_distance = det.oof_scores_
        del det.oof_scores_  # calibration data, not needed to score
        model.domain_ = det
        out["domain"] = det.summary()
    else:
        model.domain_ = None
        out["domain"] = {"blocks": [], "label_only": True,
                         "note": f"the model reads only {', '.join(kept)}: no distance to measure"}
    scored = np.asarray(cv["scored"])
    pred = np.clip(np.asarray(cv["stack"], float), y_min, y_max)  # the scores are bounded to the same range
    residuals = y[scored] - pred
    difficulties: dict = {"standard": None}
    heads = [h for h in _spread_heads(model) if h in cv["heads"]]
    if len(heads) > 1:
        difficulties["spread"] = head_spread({h: cv["heads"][h] for h in heads}, y_min, y_max)
    if oof_distance is not None:
        difficulties["distance"] = oof_distance[scored]
    g = None if groups is None or protocol != "grouped" else np.asarray(groups)[scored]
    ci, summary = fit_intervals(residuals, difficulties, g, y_min, y_max, level=level, seed=seed)
    ci.heads_ = heads if ci.mode_ == "spread" else []
    model.intervals_ = ci
    out["intervals"] = summary
    return out


def cross_conformal_check(residuals, difficulties: dict[str, np.ndarray | None], groups, level: float,
                          seed: int = 0) -> dict[str, dict]:
    """Per mode: coverage and mean width of intervals calibrated on the other grouped folds of the items."""
    residuals = np.asarray(residuals, float)
    n = len(residuals)
    g = None if groups is None else np.asarray(groups)
    splits = _folds(n, g, seed, "grouped")
    out = {}
    for mode, diff in difficulties.items():
        covered, widths = np.zeros(n, bool), np.zeros(n)
        for tr, te in splits:
            ci = ConformalIntervals(mode, level).fit(residuals[tr], None if diff is None else diff[tr])
            half = alpha_at(ci.alphas_, level) * ci.sigma(None if diff is None else diff[te])
            covered[te] = np.abs(residuals[te]) <= half
            widths[te] = 2 * half
        out[mode] = {"coverage": float(covered.mean()), "mean_width": float(np.mean(widths))}
    return out


def fit_intervals(residuals, difficulties: dict[str, np.ndarray | None], groups, y_min: float, y_max: float,
                  level: float = DEFAULT_LEVEL, seed: int = 0) -> tuple[ConformalIntervals, dict]:
    """The interval model whose mode gives the narrowest intervals in the cross-conformal check, and the check.

    Two things here look like they should cost coverage on few groups and were measured not to (issue 21;
    tests/test_trust.py, benchmarks/bench_trust.py --demo-seeds, docs/trust.md): choosing the mode on the
    residuals it then calibrates on, and ranking items although items of one prompt share their errors.
    On a dozen correlated groups each costs about half a point of coverage. The guards against them cost
    more than they save: choosing on a split of the groups halves a small calibration set, and a rank over
    groups rather than items (one residual per group, averaged over draws) widened the demo's intervals by
    10% and over-covered (92.5% at 90%, 8 draws); a design-effect correction of the rank widened them by 4%.
    """
    usable = {m: d for m, d in difficulties.items() if d is None or np.all(np.isfinite(d))}
    check = cross_conformal_check(residuals, usable, groups, level, seed=seed)
    finite = {m: c for m, c in check.items() if np.isfinite(c["mean_width"])}
    mode = min(finite, key=lambda m: finite[m]["mean_width"]) if finite else "standard"
    ci = ConformalIntervals(mode, level).fit(residuals, usable.get(mode), y_min, y_max)
    return ci, {"mode": mode, "level": level, "calibration_items": int(len(residuals)),
                "cross_conformal": check}
