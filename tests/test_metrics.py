"""The challenge metric against scipy and a hand-computed cubic fit."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from regressors import metrics
from regressors.metrics import MetricError, evaluate, fit_mapping, main_score, plcc, srcc


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 5, 300)
    p = np.tanh(y - 2.5) + rng.normal(0, 0.3, 300)  # monotone but nonlinear, noisy
    return p, y


def test_srcc_krcc_match_scipy(data):
    p, y = data
    assert srcc(p, y) == pytest.approx(stats.spearmanr(p, y).statistic, abs=1e-12)
    assert metrics.krcc(p, y) == pytest.approx(stats.kendalltau(p, y).statistic, abs=1e-12)


def test_known_small_values():
    p = [1, 2, 3, 4, 5, 6]
    y = [1, 3, 2, 4, 6, 5]
    assert srcc(p, y) == pytest.approx(1 - 6 * 4 / (6 * 35))  # sum d^2 = 4
    # a cubic of a perfectly cubic relation is exact
    x = np.linspace(-2, 2, 20)
    assert plcc(x, 3 * x**3 - x + 1) == pytest.approx(1.0, abs=1e-10)


def test_plcc_against_hand_cubic(data):
    p, y = data
    # hand-made least squares cubic via the normal equations on raw p
    A = np.column_stack([np.ones_like(p), p, p**2, p**3])
    coef = np.linalg.solve(A.T @ A, A.T @ y)
    expected = stats.pearsonr(A @ coef, y).statistic
    assert plcc(p, y) == pytest.approx(expected, abs=1e-9)
    assert main_score(p, y) == pytest.approx((abs(srcc(p, y)) + abs(expected)) / 2, abs=1e-9)
    # the cubic fit beats the linear correlation on this nonlinear relation
    assert plcc(p, y) > stats.pearsonr(p, y).statistic


def test_huge_offset_is_well_conditioned(data):
    p, y = data
    ref = plcc(p, y)
    assert plcc(p + 1e6, y) == pytest.approx(ref, abs=1e-8)
    assert plcc(p * 1e-3 + 1e6, y) == pytest.approx(ref, abs=1e-5)  # ~7 digits survive the offset
    # naive polyfit on the raw offset scores loses it; ours does not
    assert metrics.rmse(p + 1e6, y) == pytest.approx(metrics.rmse(p, y), rel=1e-6)


@pytest.mark.parametrize("fit", ["logistic4", "logistic5"])
def test_logistic_options(data, fit):
    p, y = data
    r = plcc(p, y, fit=fit)
    assert 0.5 < r <= 1.0
    mapping = fit_mapping(p, y, fit)
    assert np.all(np.isfinite(mapping(p)))
    # logistic is monotone increasing here, so its mapping preserves order on sorted inputs
    xs = np.sort(p)
    assert np.all(np.diff(mapping(xs)) >= -1e-9)


def test_bad_inputs_have_clear_errors():
    with pytest.raises(MetricError, match="constant"):
        srcc(np.ones(10), np.arange(10))
    with pytest.raises(MetricError, match="NaN.*position 2"):
        plcc([1, 2, np.nan, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    with pytest.raises(MetricError, match="at least 5"):
        main_score([1, 2, 3], [1, 2, 3])
    with pytest.raises(MetricError, match="differ in length"):
        main_score(np.arange(6), np.arange(7))
    with pytest.raises(ValueError, match="fit must be"):
        plcc(np.arange(6), np.arange(6), fit="quintic")


def test_evaluate_and_bootstrap(data):
    p, y = data
    out = evaluate(p, y, n_boot=200, seed=0)
    assert set(out) >= {"srcc", "plcc", "krcc", "rmse", "main", "n", "ci"}
    assert out["n"] == 300
    for k in ("srcc", "plcc", "main", "rmse"):
        lo, hi = out["ci"][k]
        assert lo <= out[k] <= hi, k
    # the vectorised bootstrap equals the scalar formulas on one resample
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 300, (1, 300))
    boot = metrics._bootstrap(p, y, "cubic", 1, 0)[0]
    assert boot[0] == pytest.approx(srcc(p[idx[0]], y[idx[0]]), abs=1e-9)
    assert boot[1] == pytest.approx(plcc(p[idx[0]], y[idx[0]]), abs=1e-7)
    assert evaluate(p, y, n_boot=0).get("ci") is None


@pytest.mark.parametrize("ties", [False, True])
def test_resampled_ranks_are_scipys_average_ranks(ties):
    """The bootstrap's ranks from counts equal rankdata of each resample, ties averaged, exactly."""
    rng = np.random.default_rng(3)
    v = rng.integers(0, 6, 400).astype(float) if ties else rng.normal(size=400)
    idx = rng.integers(0, len(v), (30, len(v)))
    np.testing.assert_array_equal(metrics._resampled_ranks(v, idx), stats.rankdata(v[idx], axis=1))
