"""Nested block selection: a noise block is dropped, useful blocks (and their interaction) are kept."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from regressors.block_selection import select_blocks
from regressors.heads import blocks_from_dims
from regressors.metrics import main_score
from regressors.stacking import StackConfig, base_specs, cross_validate, fit_stack


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, n_prompts = 300, 100
    gen = rng.integers(0, 3, n)
    prompt = rng.integers(0, n_prompts, n)
    emb = rng.normal(size=(n_prompts, 8))[prompt]
    noise = rng.normal(size=(n, 60))
    X = np.hstack([np.eye(4)[gen], emb, noise])
    y = np.array([0.0, 1.5, -1.0])[gen] + np.sin(emb[:, 0]) + emb[:, 1] + 0.3 * rng.normal(size=n)
    return X, y, prompt.astype(str), blocks_from_dims({"generator": 4, "prompt": 8, "noise": 60})


def test_noise_block_is_dropped_and_useful_blocks_kept(data):
    X, y, groups, blocks = data
    kept, info = select_blocks(X, y, groups, blocks, pca=None)
    assert kept == ["generator", "prompt"]
    assert info["dropped"] == ["noise"] and info["search"] == "exhaustive"
    assert len(info["scores"]) == 7  # every non-empty subset of 3 blocks
    # backward elimination (what many blocks get) reaches the same set
    kept_b, info_b = select_blocks(X, y, groups, blocks, pca=None, exhaustive_up_to=3)
    assert kept_b == ["generator", "prompt"] and info_b["search"] == "backward"
    # on many rows the proxies score a subsample of whole groups
    kept_s, info_s = select_blocks(X, y, groups, blocks, pca=None, max_items=200)
    assert kept_s == ["generator", "prompt"] and 200 <= info_s["rows"] < 230 and info["rows"] == len(y)


def test_one_block_is_kept_as_is(data):
    X, y, groups, blocks = data
    kept, info = select_blocks(X[:, :4], y, groups, {"generator": [0, 4]})
    assert kept == ["generator"] and info["search"] == "none"


def test_heads_read_only_the_kept_blocks(data):
    *_, blocks = data
    specs = {s.name: s for s in base_specs(blocks, StackConfig(), keep=["generator", "prompt"])}
    assert "block:noise" not in specs and {"block:generator", "block:prompt"} <= set(specs)
    assert specs["svr"].params["use"] == ["generator", "prompt"]
    assert specs["knn"].params["use"] == ["prompt"] and specs["knn"].params["group_target"] == "generator"
    assert specs["enet"].params["interact"] == ("generator", "prompt", 16)
    assert "use" not in base_specs(blocks, StackConfig(), keep=list(blocks))[0].params  # all kept: unrestricted


def test_stack_with_selection_ignores_noise_and_beats_the_stack_without(data):
    X, y, groups, blocks = data
    # this noise block costs the tuned heads little (the subset's tuned stack leads by 0.004 on the tuning set,
    # under the default select_margin): a margin of 0 makes the confirmed drop whose mechanism is checked here
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested="split", pca=None, heads=("svr", "enet"),
                      n_jobs=1, tune_fraction=0.4, select_margin=0.0)
    cv = cross_validate(X, y, groups, blocks, cfg)
    sel = cv["info"]["tuning_set"]["block_selection"]
    assert "noise" in sel["dropped"] and "block:noise" not in cv["heads"]
    off = cross_validate(X, y, groups, blocks, StackConfig(**{**cfg.to_dict(), "select_blocks": False}))
    np.testing.assert_array_equal(cv["scored"], off["scored"])
    s = cv["scored"]
    assert main_score(cv["stack"], y[s]) > main_score(off["stack"], y[s])
    # a dropped block costs exactly nothing: the same stack as on the other blocks alone
    clean = cross_validate(X[:, :12], y, groups, {"generator": [0, 4], "prompt": [4, 12]}, cfg)
    np.testing.assert_array_equal(clean["scored"], s)
    np.testing.assert_allclose(cv["stack"], clean["stack"], rtol=1e-9, atol=1e-12)
    # the fitted model: no head reads the noise block, so its columns do not move a prediction
    model = fit_stack(X, y, groups, blocks, cfg)
    X2 = X.copy()
    X2[:, blocks["noise"][0]:] = 0.0
    np.testing.assert_allclose(model.predict(X2), model.predict(X))
    assert model.info["block_selection"]["kept"] == ["generator", "prompt"]


def test_a_shared_cache_scores_each_subset_once(data, monkeypatch):
    import regressors.block_selection as bs

    X, y, groups, blocks = data
    cache: dict = {}
    kept, _ = select_blocks(X, y, groups, blocks, pca=None, cache=cache)
    assert len(cache) == 7

    def boom(*a, **k):
        raise AssertionError("scored again")

    monkeypatch.setattr(bs, "subset_scores", boom)
    # a configuration offering fewer blocks (an ablation's "all - noise" row) reuses the scores
    sub = {"generator": blocks["generator"], "prompt": blocks["prompt"]}
    assert select_blocks(X, y, groups, sub, pca=None, cache=cache)[0] == kept


def test_a_drop_the_tuned_heads_do_not_confirm_is_not_made(data, monkeypatch):
    """The proxies only propose: when they would drop a block the tuned stack needs (on label sets the untuned
    proxies rated the prompt block useless where the tuned heads gained 0.02-0.09 from it), every block stays
    and the stack is the very one fitted without selection."""
    import regressors.stacking as stacking

    X, y, groups, blocks = data
    cfg = StackConfig(n_trials=2, outer_folds=3, tune_folds=3, nested="split", pca=None, heads=("svr", "enet"),
                      n_jobs=1, tune_fraction=0.4)

    def proxies_drop_the_prompt(X, y, groups, blocks, **kw):
        return ["generator", "noise"], {"kept": ["generator", "noise"], "dropped": ["prompt"], "scores": {}}

    monkeypatch.setattr(stacking, "select_blocks", proxies_drop_the_prompt)
    cv = cross_validate(X, y, groups, blocks, cfg)
    sel = cv["info"]["tuning_set"]["block_selection"]
    assert sel["proposed"] == ["generator", "noise"] and sel["kept"] == ["generator", "prompt", "noise"]
    assert sel["confirm"]["kept"] == "all blocks" and sel["confirm"]["all_blocks"] > sel["confirm"]["proposed"] + 0.05
    off = cross_validate(X, y, groups, blocks, StackConfig(**{**cfg.to_dict(), "select_blocks": False}))
    np.testing.assert_allclose(cv["stack"], off["stack"], rtol=1e-12, atol=1e-12)
    # without the confirmation (the rule before issue 20) the proxies' drop is made, and costs
    blind = cross_validate(X, y, groups, blocks, StackConfig(**{**cfg.to_dict(), "select_confirm": False}))
    s = cv["scored"]
    assert blind["info"]["tuning_set"]["block_selection"]["kept"] == ["generator", "noise"]
    assert main_score(blind["stack"], y[s]) < main_score(cv["stack"], y[s]) - 0.05


@pytest.mark.parametrize("field, value", [("meta_learner", "bogus"), ("final_tuning", "again"),
                                          ("select_margin", float("nan")), ("select_margin", "0.01"),
                                          ("select_tolerance", float("inf"))])
def test_a_nonsense_stack_setting_is_refused_when_the_config_is_made_not_after_the_searches(field, value):
    """meta_learner='bogus' used to fail only when the first meta-learner was fitted, after every search; a NaN
    select_margin never compared true, so no drop was ever made, silently."""
    with pytest.raises(ValueError, match=f"^{field} must be"):
        StackConfig(**{field: value})
    with pytest.raises(ValueError, match=field):  # a copy with one field changed (the panel's --alt) too
        dataclasses.replace(StackConfig(), **{field: value})
    assert StackConfig(select_margin=-0.01).select_margin == -0.01  # negative: keep a subset up to 0.01 worse


def test_every_meta_learner_the_fit_knows_is_accepted_and_no_value_is_changed_by_the_check():
    from regressors.stacking import META_LEARNERS

    for kind in META_LEARNERS:
        assert StackConfig(meta_learner=kind).meta_learner == kind
    values = {"meta_learner": "best", "final_tuning": "retune", "select_margin": 0, "select_tolerance": 0.01}
    assert {k: getattr(StackConfig(**values), k) for k in values} == values  # the panel's cache key relies on it


@pytest.mark.parametrize("confirm", [True, False])
def test_a_proposed_subset_no_head_can_read_keeps_every_block(data, monkeypatch, confirm):
    """heads=knn reads only content blocks: a proposal of the generator alone left a stack of no heads, and the fit
    failed after its searches with numpy's 'need at least one array to concatenate'."""
    import regressors.stacking as stacking

    X, y, groups, blocks = data
    monkeypatch.setattr(stacking, "select_blocks", lambda X, y, groups, blocks, **kw: (
        ["generator"], {"kept": ["generator"], "dropped": ["prompt", "noise"], "scores": {}}))
    cfg = StackConfig(heads=("knn",), n_trials=1, n_jobs=1, pca=None, tune_folds=3, select_confirm=confirm)
    model = fit_stack(X, y, groups, blocks, cfg)
    sel = model.info["block_selection"]
    assert sel["proposed"] == ["generator"] and sel["kept"] == list(blocks) and "no head" in sel["note"]
    assert "knn" in model.names and np.all(np.isfinite(model.predict(X)))
