"""Label values no model can be fitted to, named before any work (``aigcq validate``, ``aigcq regress``).

A target is refused when it has non-finite values (``inf``), a value astronomically far from the
others (``1e308`` among ratings of 1..5: a unit or parsing error), no values at all, too few
labelled items for cross-validation, or one value for every item. Nothing is refused for its scale
alone: ``mos × 1e-300`` is a valid target (regressors.target_scale standardises it inside the fit).
"""
from __future__ import annotations

import math

import numpy as np

#: labelled items below which a cross-validated fit (5 outer folds, a tuning split) says nothing
MIN_LABELS = 10
#: distance from the median, in robust spreads (1.4826 MAD), beyond which a value is taken for an error;
#: ratings, scores and counts stay far below it, a misplaced exponent lands far above
ASTRONOMICAL = 1e6
#: how many items a message names (then a count)
SHOWN = 3


class TargetError(ValueError):
    """A target no model can be fitted to (one line naming the column, the items and what to do)."""


def _names(ids, positions) -> str:
    positions = list(positions)
    shown = ", ".join(str(ids[p]) for p in positions[:SHOWN])
    return shown + (f" and {len(positions) - SHOWN} more" if len(positions) > SHOWN else "")


def astronomical(values) -> np.ndarray:
    """Positions of the finite values astronomically far from the others (see :data:`ASTRONOMICAL`).

    Computed on the values scaled by a power of two (exact) so that neither ``1e308`` nor ``1e-300``
    overflows or underflows on the way."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(v))
    if len(idx) < 3:
        return np.zeros(0, dtype=int)
    w = v[idx]
    peak = float(np.max(np.abs(w)))
    if peak == 0:
        return np.zeros(0, dtype=int)
    w = np.ldexp(w, -math.frexp(peak)[1])  # |w| < 1
    dev = np.abs(w - np.median(w))
    spread = 1.4826 * float(np.median(dev)) or float(np.mean(dev))
    if spread == 0:
        return np.zeros(0, dtype=int)
    with np.errstate(over="ignore"):
        return idx[dev / spread > ASTRONOMICAL]


def column_problems(values, ids, name: str, min_labels: int = MIN_LABELS, per_item: bool = True) -> list[str]:
    """One line per problem of a label column used as a target (empty: fine). NaN means unlabelled.
    ``per_item=False`` leaves out the lines about single values (reported elsewhere, e.g. per item)."""
    v = np.asarray(values, dtype=np.float64)
    ids = np.asarray(ids, dtype=object)
    labelled = ~np.isnan(v)
    n = int(labelled.sum())
    if n == 0:
        return [f"label column {name!r} has no values (all {len(v)} items empty or NaN): nothing to fit"]
    out = []
    if per_item:
        bad = np.flatnonzero(labelled & ~np.isfinite(v))
        if len(bad):
            out.append(f"label column {name!r}: {len(bad)} value(s) not finite ({_names(ids, bad)}: "
                       f"{v[bad[0]]}); fix or remove them")
        far = astronomical(v)
        if len(far):
            out.append(f"label column {name!r}: {len(far)} value(s) astronomically far from the others "
                       f"({_names(ids, far)}: {v[far[0]]:.6g}, more than {ASTRONOMICAL:.0e} spreads from the "
                       "median; a unit or parsing error?); fix or remove them")
    finite = v[np.isfinite(v)]
    if len(finite) and np.all(finite == finite[0]):
        out.append(f"label column {name!r} is constant ({finite[0]:.6g} for all {len(finite)} labelled items): "
                   "there is nothing to learn")
    if n < min_labels:
        out.append(f"label column {name!r} has {n} labelled item(s); a cross-validated fit needs at least "
                   f"{min_labels}")
    return out


def check_target(y, ids, name: str, where: str = "") -> None:
    """Raise :class:`TargetError` (one line) when ``y`` (the labelled items of the training split) cannot be
    fitted: every problem of :func:`column_problems`, joined."""
    problems = column_problems(y, ids, name)
    if problems:
        raise TargetError(f"{where}{'; '.join(problems)}. Nothing was fitted (`aigcq validate DATA` lists the "
                          "label problems of a dataset)")
