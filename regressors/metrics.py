"""The NTIRE 2024 AIGC quality metric: main = (|SRCC| + |PLCC|) / 2.

PLCC is computed after mapping predictions onto the MOS scale with a monotone-ish
nonlinear fit, as the challenge (and VQEG practice) did: a third-order polynomial by
default, the 4- or 5-parameter logistic as options. RMSE is measured after the same
mapping (on the MOS scale). Predictions are standardised before fitting because a
cubic in raw scores with a large offset (e.g. 1e6 + x) is hopelessly ill-conditioned:
polyfit's Vandermonde matrix would lose every significant digit.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from scipy import optimize, stats

FITS = ("cubic", "logistic4", "logistic5", "none")
MIN_ITEMS = 5


class MetricError(ValueError):
    """Inputs on which the challenge metric is undefined (constant, NaN, too few items)."""


def check_inputs(pred, target, what: str = "predictions") -> tuple[np.ndarray, np.ndarray]:
    """Return float64 1-d copies, or raise MetricError saying exactly what is wrong."""
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise MetricError(f"{what} and targets differ in length: {p.size} vs {t.size}")
    if p.size < MIN_ITEMS:
        raise MetricError(f"need at least {MIN_ITEMS} items to compute correlations, got {p.size}")
    for name, a in ((what, p), ("targets", t)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise MetricError(f"{name} contain {bad.size} NaN/inf value(s), first at position {bad[0]}")
        if np.ptp(a) == 0:
            raise MetricError(f"{name} are constant ({a[0]!r} for all {a.size} items): correlation is undefined")
    return p, t


# ------------------------------------------------------------------ nonlinear fits
def _standardise(p: np.ndarray) -> tuple[float, float]:
    mu, sd = float(p.mean()), float(p.std())
    return mu, sd if sd > 0 else 1.0


def _logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) / (1.0 + np.exp(-np.clip((x - b3) / abs(b4), -50, 50))) + b2


def _logistic5(x, b1, b2, b3, b4, b5):
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(np.clip(b2 * (x - b3), -50, 50)))) + b4 * x + b5


def fit_mapping(pred, target, fit: str = "cubic") -> Callable[[np.ndarray], np.ndarray]:
    """Fit pred -> target and return the mapping (callable on new predictions).

    The fit is done on standardised predictions, so it is invariant to affine changes
    of the prediction scale (1e6 offsets, 1e-6 scales).
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    p, t = np.asarray(pred, float), np.asarray(target, float)
    mu, sd = _standardise(p)
    z = (p - mu) / sd
    if fit == "none":
        return lambda x: np.asarray(x, float)
    if fit == "cubic":
        # least squares on [1, z, z^2, z^3]; z is O(1) so the system is well conditioned
        A = np.vander(z, 4, increasing=True)
        coef, *_ = np.linalg.lstsq(A, t, rcond=None)
        return lambda x: np.vander((np.asarray(x, float) - mu) / sd, 4, increasing=True) @ coef
    tmu, tsd = _standardise(t)
    u = (t - tmu) / tsd  # fit the logistic in standard units too, then map back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fit == "logistic4":
                f = _logistic4
                p0 = [u.max(), u.min(), 0.0, 1.0]
            else:
                f = _logistic5
                p0 = [u.max() - u.min(), 1.0, 0.0, 0.0, float(u.mean())]
            params, _ = optimize.curve_fit(f, z, u, p0=p0, maxfev=20000)
        except (RuntimeError, optimize.OptimizeWarning):  # no convergence: fall back to linear
            slope, icpt = np.polyfit(z, u, 1)
            return lambda x: (slope * (np.asarray(x, float) - mu) / sd + icpt) * tsd + tmu
    return lambda x: f((np.asarray(x, float) - mu) / sd, *params) * tsd + tmu


# ------------------------------------------------------------------ single scores
def srcc(pred, target) -> float:
    p, t = check_inputs(pred, target)
    return float(stats.spearmanr(p, t).statistic)


def krcc(pred, target) -> float:
    p, t = check_inputs(pred, target)
    return float(stats.kendalltau(p, t).statistic)


def plcc(pred, target, fit: str = "cubic") -> float:
    p, t = check_inputs(pred, target)
    mapped = fit_mapping(p, t, fit)(p)
    if np.ptp(mapped) == 0:
        return 0.0
    return float(stats.pearsonr(mapped, t).statistic)


def rmse(pred, target, fit: str = "cubic") -> float:
    p, t = check_inputs(pred, target)
    return float(np.sqrt(np.mean((fit_mapping(p, t, fit)(p) - t) ** 2)))


def main_score(pred, target, fit: str = "cubic") -> float:
    """The challenge's main score, (|SRCC| + |PLCC|) / 2."""
    return (abs(srcc(pred, target)) + abs(plcc(pred, target, fit))) / 2.0


# ------------------------------------------------------------------ all at once + CI
def _fast_scores(p: np.ndarray, t: np.ndarray, fit: str) -> tuple[float, float, float]:
    """srcc, plcc, rmse on validated inputs."""
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return np.nan, np.nan, np.nan
    s = stats.spearmanr(p, t).statistic
    m = fit_mapping(p, t, fit)(p)
    r = stats.pearsonr(m, t).statistic if np.ptp(m) > 0 else 0.0
    return float(s), float(r), float(np.sqrt(np.mean((m - t) ** 2)))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


def _resampled_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``stats.rankdata(values[idx], axis=1)`` (average ranks of ties) without sorting each resample.

    A resample only repeats the items: with each distinct value's count in a row, the rank of that
    value is the count of smaller values plus (its count + 1) / 2. That is a bincount and a cumulative
    sum per row, O(n) instead of a sort; the ranks are the same half-integers exactly.
    """
    uniq, inverse = np.unique(values, return_inverse=True)
    codes = inverse[idx]  # [m, n] distinct-value index of each drawn item
    m, u = codes.shape[0], len(uniq)
    counts = np.bincount((codes + u * np.arange(m)[:, None]).ravel(), minlength=m * u).reshape(m, u)
    below = np.cumsum(counts, axis=1) - counts
    avg = below + (counts + 1) / 2.0
    return np.take_along_axis(avg, codes, axis=1)


def _bootstrap(p: np.ndarray, t: np.ndarray, fit: str, n_boot: int, seed: int, chunk: int = 50) -> np.ndarray:
    """[n_boot, 4] of srcc, plcc, rmse, main on resampled items.

    Vectorised over resamples for the cubic fit (batched 4x4 normal equations on
    standardised predictions; tied ranks averaged as spearmanr does). Other fits loop.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, 4))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, p.size, (m, p.size))
        P, T = p[idx], t[idx]
        s = _rowwise_pearson(_resampled_ranks(p, idx), _resampled_ranks(t, idx))
        if fit == "cubic":
            mu = P.mean(1, keepdims=True)
            sd = P.std(1, keepdims=True)
            sd[sd == 0] = 1.0
            Z = (P - mu) / sd
            A = np.stack([np.ones_like(Z), Z, Z**2, Z**3], axis=2)  # [m, n, 4]
            G = np.einsum("mni,mnj->mij", A, A) + 1e-10 * np.eye(4)
            coef = np.linalg.solve(G, np.einsum("mni,mn->mi", A, T)[..., None])[..., 0]
            M = np.einsum("mni,mi->mn", A, coef)
        else:
            M = np.stack([fit_mapping(P[i], T[i], fit)(P[i]) for i in range(m)])
        r = _rowwise_pearson(M, T)
        e = np.sqrt(((M - T) ** 2).mean(1))
        out[start:start + m] = np.column_stack([s, r, e, (np.abs(s) + np.abs(r)) / 2.0])
    return out


def evaluate(pred, target, fit: str = "cubic", n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """srcc, plcc, krcc, rmse, main, n and percentile bootstrap intervals (``ci``).

    The bootstrap resamples items with replacement; ``n_boot=0`` skips it. KRCC's
    interval is left out (O(n log n) per resample, and nobody ranks on it).
    """
    p, t = check_inputs(pred, target)
    # every score but RMSE ignores the scale: extreme ones (1e-300) are computed at an exact power-of-two
    # rescaling (none for ordinary targets: k = 0), RMSE brought back to the target's units
    from .target_scale import exponent, unscale

    kp, kt = exponent(p), exponent(t)
    p, t = np.ldexp(p, kp), np.ldexp(t, kt)
    s, r, e = _fast_scores(p, t, fit)
    e = float(unscale(e, kt))
    out = {
        "srcc": s,
        "plcc": r,
        "krcc": float(stats.kendalltau(p, t).statistic),
        "rmse": e,
        "main": (abs(s) + abs(r)) / 2.0,
        "n": int(p.size),
        "fit": fit,
    }
    if n_boot:
        boots = _bootstrap(p, t, fit, n_boot, seed)
        lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        boots[:, 2] = unscale(boots[:, 2], kt)
        out["ci"] = {
            name: [float(np.nanpercentile(boots[:, j], lo)), float(np.nanpercentile(boots[:, j], hi))]
            for j, name in enumerate(("srcc", "plcc", "rmse", "main"))
        }
        out["ci"]["level"] = level
        out["ci"]["n_boot"] = n_boot
    return out
