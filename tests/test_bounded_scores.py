"""Bounded scores: no head's extrapolation drags the stack, and no score leaves the training target range."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from regressors import bundle
from regressors.heads import blocks_from_dims
from regressors.stacking import (StackConfig, StackedModel, _fit_meta, _Layout, _stack_layout, _Tuning,
                                 bounded_combine, cross_validate, fit_stack)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    gen = rng.integers(0, 3, n)
    emb = rng.normal(size=(n, 6))
    pix = rng.normal(size=(n, 5))
    X = np.hstack([np.eye(4)[gen], emb, pix])
    y = 3.0 + 0.6 * gen + 0.5 * emb[:, 0] + 0.4 * pix[:, 0] + 0.1 * rng.normal(size=n)
    return X, np.clip(y, 1.0, 5.0), rng.integers(0, 40, n).astype(str), blocks_from_dims(
        {"generator": 4, "prompt": 6, "pixels": 5})


@pytest.fixture(scope="module")
def fitted():
    X, y, groups, blocks = _data()
    cfg = StackConfig(heads=("enet", "svr"), n_trials=0, n_jobs=1, pca=None, select_blocks=False, tune_folds=3)
    return fit_stack(X, y, groups, blocks, cfg), X, y


def test_a_head_that_extrapolates_wildly_cannot_push_the_score_out_of_range(fitted):
    model, X, y = fitted
    assert model.bounds == (float(y.min()), float(y.max()))
    far = X * 50.0  # features far from every training item: the linear heads extrapolate
    raw = model.predict_heads(far)
    assert any(np.any((p < y.min()) | (p > y.max())) for p in raw.values()), "the test needs a head out of range"
    unbounded = StackedModel(model.heads, model.meta, model.info, bounds=None).predict(far)
    assert np.any((unbounded < y.min() - 1) | (unbounded > y.max() + 1))  # what the stack said before bounds
    scores = model.predict(far)
    assert np.all((scores >= y.min()) & (scores <= y.max()))


def test_in_range_predictions_are_unchanged_where_no_head_leaves_the_range(fitted):
    model, X, y = fitted
    heads = model.predict_heads(X)
    inside = np.all([(p >= y.min()) & (p <= y.max()) for p in heads.values()], axis=0)
    unbounded = StackedModel(model.heads, model.meta, model.info, bounds=None).predict(X)
    inside &= (unbounded >= y.min()) & (unbounded <= y.max())
    assert inside.sum() > 0.8 * len(X)
    np.testing.assert_array_equal(model.predict(X)[inside], unbounded[inside])


def test_each_head_is_bounded_before_the_meta_learner_not_only_the_sum():
    meta = LinearRegression().fit(np.array([[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]]), np.array([1.0, 3.0, 5.0]))
    meta.coef_, meta.intercept_ = np.array([0.5, 0.5]), 0.0
    # head 1 extrapolates to 100: bounded first it counts as 5, so the stack says (5 + 3) / 2 = 4, not 5
    out = bounded_combine(meta, np.array([[100.0, 3.0]]), (1.0, 5.0))
    assert out[0] == pytest.approx(4.0)
    assert bounded_combine(meta, np.array([[100.0, 3.0]]), None)[0] == pytest.approx(51.5)


def test_the_meta_learner_is_fitted_on_bounded_out_of_fold_predictions():
    rng = np.random.default_rng(1)
    y = rng.uniform(1, 5, 200)
    good = y + 0.2 * rng.normal(size=200)
    wild = good.copy()
    wild[:5] = [-400.0, 300.0, -250.0, 500.0, -600.0]  # a linear head far off on five items
    t = _Tuning("t", np.zeros((200, 1)), y, None, StackConfig())
    lay = _Layout("t", None, [])
    from regressors.stacking import HeadSpec

    lay.specs = [HeadSpec("a", "enet", {}, False), HeadSpec("b", "enet", {}, False)]
    lay.results = {0: ({}, {}, good), 1: ({}, {}, wild)}
    _, meta, _, pred, _ = _stack_layout(t, lay)
    expected = _fit_meta(np.clip(np.column_stack([good, wild]), y.min(), y.max()), y)
    np.testing.assert_allclose(meta.coef_, expected.coef_)
    assert meta.coef_[1] > 0.1  # bounded, the head that is right on 195 items keeps its say
    assert np.all((pred >= y.min()) & (pred <= y.max()))


def test_cross_validated_predictions_stay_in_the_training_folds_range():
    X, y, groups, blocks = _data(n=150, seed=2)
    cfg = StackConfig(heads=("enet",), n_trials=0, n_jobs=1, pca=None, select_blocks=False, nested="split",
                      outer_folds=3, tune_folds=3)
    cv = cross_validate(X, y, groups, blocks, cfg, final_predict=X[:10] * 40.0)
    assert np.all((cv["stack"] >= y.min()) & (cv["stack"] <= y.max()))
    assert np.all((cv["final_predictions"] >= y.min()) & (cv["final_predictions"] <= y.max()))
    off = cross_validate(X, y, groups, blocks, StackConfig(**{**cfg.to_dict(), "bound_scores": False}),
                         final_predict=X[:10] * 40.0)
    assert np.any((off["final_predictions"] < y.min()) | (off["final_predictions"] > y.max()))
    assert off["final"].bounds is None


def test_the_bundle_carries_the_bounds(fitted, tmp_path):
    model, X, y = fitted
    folder = bundle.save_bundle(tmp_path / "model", model, {"track": "image", "target": {"name": "mos"},
                                                             "features": [], "n_features": X.shape[1]})
    loaded, _ = bundle.load_bundle(folder)
    assert loaded.bounds == model.bounds
    scores = loaded.predict(X * 50.0)
    assert np.all((scores >= y.min()) & (scores <= y.max()))


def test_a_model_saved_before_bounds_existed_still_predicts_unbounded(fitted):
    model, X, _ = fitted
    old = StackedModel(model.heads, model.meta, model.info)
    del old.__dict__["bounds"]  # what skops rebuilds from an older model.skops
    np.testing.assert_array_equal(old.predict(X),
                                  StackedModel(model.heads, model.meta, model.info, bounds=None).predict(X))
