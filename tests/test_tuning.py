"""Grouped folds, Optuna tuning (seeded, pruned, resumable) and honest stacking."""
from __future__ import annotations

import numpy as np
import pytest

from regressors.heads import blocks_from_dims
from regressors.stacking import StackConfig, base_specs, cross_validate, fit_stack
from regressors.tuning import make_folds, subsample_groups, tune_head


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    n, n_prompts = 480, 160
    gen = rng.integers(0, 4, n)
    prompt = rng.integers(0, n_prompts, n)
    emb = rng.normal(size=(n_prompts, 12))[prompt]
    X = np.hstack([np.eye(4)[gen], emb])
    y = np.array([0.0, 1.0, 2.0, -1.0])[gen] + np.sin(emb[:, 0]) + 0.3 * rng.normal(size=n)
    return X, y, prompt.astype(str), blocks_from_dims({"generator": 4, "prompt": 12})


def test_grouped_folds_keep_prompts_together(toy):
    X, y, groups, _ = toy
    folds = make_folds(len(y), groups, 5, seed=3)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(y)))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    # shuffled by seed: another seed gives other folds
    other = make_folds(len(y), groups, 5, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))
    random = make_folds(len(y), groups, 5, protocol="random")
    assert any(set(groups[tr]) & set(groups[te]) for tr, te in random)
    with pytest.raises(ValueError, match="at least 5 distinct groups"):
        make_folds(10, ["a", "b"] * 5, 5)


def test_subsample_takes_whole_groups(toy):
    _, _, groups, _ = toy
    idx = subsample_groups(groups, 100, seed=0)
    assert 100 <= len(idx) < 130
    chosen = set(groups[idx])
    assert all(g in chosen for g in groups[np.isin(groups, list(chosen))])
    assert len(subsample_groups(groups, None)) == len(groups)


def test_tuning_is_seeded_and_improves_on_defaults(toy):
    X, y, groups, blocks = toy
    a = tune_head("svr", X, y, groups, base_params={"blocks": blocks}, n_trials=8, seed=1)
    b = tune_head("svr", X, y, groups, base_params={"blocks": blocks}, n_trials=8, seed=1)
    assert a.params == b.params and a.best_score == pytest.approx(b.best_score)
    assert a.history[0] <= a.best_score  # trial 0 is the hand-set default
    assert set(a.params) >= {"C", "epsilon", "gamma", "weights", "blocks"}


@pytest.mark.parametrize("kind", ["svr", "enet", "lgbm", "knn"])
def test_best_trials_predictions_are_what_a_refit_predicts(toy, kind):
    """The search keeps its best trial's out-of-fold predictions: a refit with the chosen parameters on
    the same folds gives exactly these, so stacking does not have to refit them."""
    from regressors.heads import make_head

    X, y, groups, blocks = toy
    res = tune_head(kind, X, y, groups, base_params={"blocks": blocks}, n_trials=6, n_splits=3, seed=2)
    assert res.oof is not None
    refit = np.zeros(len(y))
    for tr, te in make_folds(len(y), groups, 3, seed=2):
        refit[te] = make_head(kind, **res.params).fit(X[tr], y[tr]).predict(X[te])
    np.testing.assert_array_equal(res.oof, refit)


def test_pruning_prunes_bad_trials(toy):
    X, y, groups, blocks = toy
    res = tune_head("enet", X, y, groups, base_params={"blocks": blocks}, n_trials=20, n_splits=3, seed=0)
    assert res.n_pruned > 0
    unpruned = tune_head("enet", X, y, groups, base_params={"blocks": blocks}, n_trials=6, seed=0, prune=False)
    assert unpruned.n_pruned == 0


def test_storage_resumes_a_study(toy, tmp_path):
    X, y, groups, blocks = toy
    journal = str(tmp_path / "study.journal")
    first = tune_head("enet", X, y, groups, base_params={"blocks": blocks}, n_trials=3, storage=journal,
                      study_name="s", seed=0)
    assert first.n_trials == 3
    second = tune_head("enet", X, y, groups, base_params={"blocks": blocks}, n_trials=5, storage=journal,
                       study_name="s", seed=0)
    assert second.n_trials == 5  # 3 resumed + 2 new, not 5 new
    # predictions are kept only for a best trial this process ran
    assert (second.oof is None) == (second.params == first.params and second.best_score == first.best_score)
    db = f"sqlite:///{tmp_path / 'study.db'}"
    assert tune_head("enet", X, y, groups, base_params={"blocks": blocks}, n_trials=2, storage=db,
                     study_name="s").n_trials == 2


def test_base_specs_bag_of_features(toy):
    *_, blocks = toy
    specs = base_specs(blocks, StackConfig(fixed_heads=()))
    names = [s.name for s in specs]
    assert names == ["svr", "enet", "lgbm", "knn", "block:generator", "block:prompt"]
    assert names == [s.name for s in base_specs(blocks, StackConfig())]  # no fixed head by default
    smooth = StackConfig(fixed_heads=("svr_smooth",))
    fixed = {s.name: s for s in base_specs(blocks, smooth)}["fixed:svr_smooth"]
    assert fixed.name == "fixed:svr_smooth" and not fixed.tune and fixed.params["group_target"] == "generator"
    assert "group_target" not in {s.name: s for s in base_specs({"prompt": blocks["prompt"]}, smooth)}[
        "fixed:svr_smooth"].params
    with pytest.raises(ValueError, match="unknown fixed head"):
        base_specs(blocks, StackConfig(fixed_heads=("nope",)))
    enet = specs[1]
    assert enet.params["interact"] == ("generator", "prompt", 16)
    knn = specs[3]  # neighbours in the prompt block, relative to each generator's mean and spread
    assert knn.params["use"] == ["prompt"] and knn.params["group_target"] == "generator"
    assert "knn" not in [s.name for s in base_specs({"generator": blocks["generator"]}, StackConfig())]
    assert "use" not in {s.name: s for s in base_specs(None, StackConfig())}["knn"].params
    assert base_specs(None, StackConfig(block_head=None))[0].params["blocks"] is None


@pytest.mark.parametrize("nested", ["split", "full"])
def test_cross_validate_is_honest(toy, nested):
    X, y, groups, blocks = toy
    cfg = StackConfig(n_trials=3, outer_folds=3, tune_folds=3, nested=nested, pca=None, heads=("enet", "svr"))
    cv = cross_validate(X, y, groups, blocks, cfg)
    scored = cv["scored"]
    if nested == "split":
        tune_set = np.setdiff1d(np.arange(len(y)), scored)
        assert len(tune_set) > 0
        assert not set(groups[tune_set]) & set(groups[scored])  # no prompt both tuned on and scored
    assert len(cv["stack"]) == len(scored)
    from regressors.metrics import main_score

    assert main_score(cv["stack"], y[scored]) > main_score(cv["heads"]["block:prompt"], y[scored])


def test_meta_weights_nonnegative(toy):
    X, y, groups, blocks = toy
    model = fit_stack(X, y, groups, blocks, StackConfig(n_trials=2, tune_folds=3, pca=None, heads=("enet",)))
    w = model.weights()
    assert all(v >= 0 for v in w.values()) and sum(w.values()) > 0
    assert model.predict(X[:7]).shape == (7,)


def test_nested_auto_scores_every_item_on_small_sets(toy):
    from regressors.stacking import resolve_nested

    X, y, groups, blocks = toy
    assert resolve_nested(StackConfig(), len(y)) == "full"
    assert resolve_nested(StackConfig(), 5000) == "split"
    assert resolve_nested(StackConfig(auto_full_below=10), len(y)) == "split"
    with pytest.raises(ValueError, match="nested must be"):
        resolve_nested(StackConfig(nested="bogus"), 10)
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, pca=None, heads=("enet",), block_head=None)
    cv = cross_validate(X, y, groups, blocks, cfg)
    assert cv["info"]["nested"] == "full" and len(cv["scored"]) == len(y)


def test_few_groups_lower_the_fold_count(toy):
    X, y, groups, blocks = toy
    few = np.asarray(groups)
    uniq = np.unique(few)[:4]
    keep = np.isin(few, uniq)
    cfg = StackConfig(n_trials=2, outer_folds=5, tune_folds=3, pca=None, heads=("enet",), block_head=None)
    cv = cross_validate(X[keep], y[keep], few[keep], blocks, cfg)
    assert cv["info"]["outer_folds"] == 4 and len(set(cv["folds"])) == 4
    one = np.full(int(keep.sum()), "p")
    with pytest.raises(ValueError, match="at least 2 distinct groups"):
        cross_validate(X[keep], y[keep], one, blocks, cfg)


@pytest.mark.parametrize("nested", ["split", "full"])
def test_worker_processes_give_the_same_stack_as_one_process(toy, nested):
    X, y, groups, blocks = toy
    base = dict(n_trials=3, outer_folds=3, tune_folds=3, nested=nested, pca=None, heads=("enet", "svr", "lgbm"))
    serial = cross_validate(X, y, groups, blocks, StackConfig(**base, n_jobs=1))
    parallel = cross_validate(X, y, groups, blocks, StackConfig(**base, n_jobs=2))
    np.testing.assert_array_equal(serial["scored"], parallel["scored"])
    np.testing.assert_allclose(parallel["stack"], serial["stack"], rtol=1e-10, atol=1e-12)
    assert list(parallel["heads"]) == list(serial["heads"])  # same heads, same order


def test_resolve_jobs():
    import os

    from regressors.stacking import resolve_jobs

    from regressors.stacking import MAX_AUTO_WORKERS

    cores = len(os.sched_getaffinity(0))
    assert resolve_jobs(3) == 3 and resolve_jobs(-1) == min(cores, MAX_AUTO_WORKERS) and resolve_jobs(-cores - 5) == 1
    assert resolve_jobs(64) == 64  # an explicit number is taken as given
    with pytest.raises(ValueError, match="n_jobs"):
        resolve_jobs(0)


def test_elasticnet_gram_path_matches_plain_coordinate_descent(toy):
    from regressors.heads import ElasticNetHead

    X, y, _, blocks = toy
    head = ElasticNetHead(alpha=1e-3, blocks=blocks).fit(X, y)
    assert head.model_.precompute is True  # 480 rows > 16 columns: the Gram path
    plain = ElasticNetHead(alpha=1e-3, blocks=blocks)
    plain._GRAM_MAX_COLUMNS = 0  # force plain coordinate descent on the same data
    plain.fit(X, y)
    assert plain.model_.precompute is False
    np.testing.assert_allclose(head.predict(X), plain.predict(X), rtol=1e-6, atol=1e-6)
