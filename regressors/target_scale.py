"""A target of extreme scale fitted as well as an ordinary one, by an exact power-of-two scaling.

The heads standardise their target themselves (``(y - mean) / std``, undone in predict), so every
fit is already scale-free for ordinary targets. At ``mos × 1e-300`` that breaks: the squared
deviations underflow, ``std`` becomes 0 (then 1), and every head learns a constant. The fit
therefore multiplies the target by 2**k before anything sees it and the model divides its output by
2**k (``StackedModel.target_scale_exp``). Multiplying by a power of two is exact in binary floating
point, so the scaled target holds the same digits; and ``k`` is 0, i.e. nothing at all changes, for
every target whose spread lies in [2**-20, 2**40) and magnitude below 2**60 (MOS, 0-100 scores, z-scores,
counts): today's results stay bit for bit what they were.
"""
from __future__ import annotations

import math

import numpy as np

#: ordinary targets: spread (max - min) in [2**LOW, 2**HIGH) and largest magnitude below 2**PEAK -> k = 0
LOW, HIGH, PEAK = -20, 40, 60


def exponent(y) -> int:
    """k such that ``y * 2**k`` has a spread of order one; 0 for ordinary targets (see module doc)."""
    v = np.asarray(y, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return 0
    peak = float(np.max(np.abs(v)))
    if peak == 0:
        return 0
    e_peak = math.frexp(peak)[1]
    w = np.ldexp(v, -e_peak)  # |w| < 1: the spread below cannot overflow
    spread = float(np.max(w) - np.min(w))
    if spread == 0:
        return 0
    e_spread = math.frexp(spread)[1] + e_peak  # spread of y is in [2**(e_spread-1), 2**e_spread)
    if LOW < e_spread <= HIGH and e_peak <= PEAK:
        return 0
    return -e_spread


def scale(y, k: int) -> np.ndarray:
    """``y * 2**k`` (exact); ``y`` itself when k is 0."""
    return np.asarray(y, dtype=np.float64) if k == 0 else np.ldexp(np.asarray(y, dtype=np.float64), k)


def unscale(pred, k: int) -> np.ndarray:
    """Back to the target's own units (exact)."""
    return pred if k == 0 else np.ldexp(np.asarray(pred, dtype=np.float64), -k)
