"""The evaluation panel's machinery (benchmarks/panel.py) on a tiny set: the panel itself is a benchmark."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import panel  # noqa: E402
import panel_sets  # noqa: E402


def test_the_recipe_draws_whole_prompts_of_k_generators_until_n():
    rng = np.random.default_rng(0)
    gens = np.array([f"G{g}" for g in rng.integers(0, 8, 3000)])
    prompts = np.array([f"p{p}" for p in rng.integers(0, 900, 3000)])
    rows = panel_sets.recipe_rows(gens, prompts, 500, 3, seed=4)
    assert len(set(gens[rows])) <= 3 and np.all(np.diff(rows) > 0) and len(rows) >= 500
    chosen = set(gens[rows])
    for p in set(prompts[rows]):  # every item of a prompt drawn, among the chosen generators
        members = np.flatnonzero((prompts == p) & np.isin(gens, list(chosen)))
        assert set(members) <= set(rows)
    np.testing.assert_array_equal(rows, panel_sets.recipe_rows(gens, prompts, 500, 3, seed=4))
    assert not np.array_equal(rows, panel_sets.recipe_rows(gens, prompts, 500, 3, seed=5))
    assert len(set(gens[panel_sets.recipe_rows(gens, prompts, 500, None, seed=4)])) > 3  # all generators


def test_alternatives_parse_as_stack_config_fields():
    assert panel.parse_alt("select_blocks=false;select_margin=0.01;heads=svr,enet;nested=full;pca=none") == {
        "select_blocks": False, "select_margin": 0.01, "heads": ("svr", "enet"), "nested": "full", "pca": None}
    with pytest.raises(SystemExit, match="no field"):
        panel.parse_alt("selct_blocks=false")


@pytest.mark.parametrize("spec, says", [("max_tune_items=1.5", "max_tune_items takes an integer"),
                                        ("select_margin=small", "select_margin takes a number"),
                                        ("meta_learner=bogus", "meta_learner must be one of")])
def test_a_bad_alternative_is_one_line_before_any_fit(spec, says):
    """int('1.5') was a traceback; meta_learner=bogus ran the first set's default fit and then failed"""
    with pytest.raises(SystemExit, match=says):
        panel.parse_alt(spec)


def test_the_paired_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    groups = np.repeat(np.arange(100), 3)
    good, bad = y + 0.3 * rng.normal(size=300), y + 1.5 * rng.normal(size=300)
    assert panel.paired_bootstrap(good, good, y, groups, 50) == (0.0, 0.0)
    lo, hi = panel.paired_bootstrap(good, bad, y, groups, 200)
    assert 0 < lo < hi and panel.outcome(lo, hi) == "win" and panel.outcome(-hi, -lo) == "loss"


def test_the_panel_runs_a_tiny_set_end_to_end(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    n = 150
    gen = rng.integers(0, 3, n)
    prompt = rng.integers(0, 50, n)
    emb = rng.normal(size=(50, 5))[prompt]
    X = np.hstack([np.eye(4)[gen], emb, rng.normal(size=(n, 20))])
    y = gen + emb[:, 0] + 0.3 * rng.normal(size=n)
    from regressors.heads import blocks_from_dims

    tiny = panel_sets.PanelSet("tiny", "tiny")
    data = panel_sets.SetData(X, y, prompt.astype(str), gen.astype(str),
                              blocks_from_dims({"generator": 4, "prompt": 5, "noise": 20}), prompt.astype(str))
    monkeypatch.setattr(panel_sets, "SETS", [tiny])
    monkeypatch.setattr(panel_sets, "load_set", lambda ps: data)
    monkeypatch.setattr(panel_sets, "CACHE", tmp_path / "cache")
    out = tmp_path / "panel.json"
    args = ["--sets", "tiny", "--trials", "1", "--jobs", "1", "--n-boot", "30", "--out", str(out),
            "--base", "heads=enet;pca=none;outer_folds=3;tune_folds=2", "--alt", "select_blocks=false",
            "--alt", "meta_learner=mean"]
    assert panel.main(args) == 0
    result = json.loads(out.read_text())
    assert {"date", "commit", "machine", "cpu_count", "load_avg", "command"} <= set(result["meta"])
    assert [r["alt"] for r in result["rows"]] == ["select_blocks=False", "meta_learner=mean"]
    row = result["rows"][0]
    assert row["n"] == n and row["n_scored"] == n and row["delta_lo"] <= row["delta"] + 1e-9
    assert set(result["summary"]) == {"select_blocks=False", "meta_learner=mean"}
    assert "| tiny |" in out.with_suffix(".md").read_text()
    # a rerun with the same code reuses every fit from the cache
    assert panel.main(args) == 0
    assert all(r["reused"] == [True, True] for r in json.loads(out.read_text())["rows"])


def test_code_that_is_not_a_checkout_is_refused_not_replaced_by_this_one(tmp_path):
    """--code naming a missing folder (or one without regressors/) used to run this checkout's code silently, so a
    'before' panel measured the new code under the old code's label."""
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(SystemExit, match="no regressors package there"):
            panel.main(["--code", str(where), "--code-label", "main@old", "--sets", "nothing"])


def test_code_already_imported_from_elsewhere_is_refused(tmp_path, monkeypatch):
    other = tmp_path / "old"
    (other / "regressors").mkdir(parents=True)
    (other / "regressors" / "__init__.py").write_text("")
    import regressors.stacking  # noqa: F401 - this process runs this checkout's code already

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    with pytest.raises(SystemExit, match="already imported from"):
        panel.main(["--code", str(other), "--sets", "nothing"])


def test_the_code_hash_ignores_stack_config_checks_but_not_code():
    base = "class StackConfig:\n    a: int = 1\n\n    def to_dict(self):\n        return {}\n"
    checked = base + "\n    def __post_init__(self):\n        if self.a < 0:\n            raise ValueError('a')\n"
    assert panel._code_of(checked) == panel._code_of(base)
    assert panel._code_of(base.replace("return {}", "return {'a': 1}")) != panel._code_of(base)


def test_the_fit_time_benchmark_refuses_a_checkout_that_is_not_one(tmp_path):
    """--before naming a missing folder used to time this checkout's (or the installed) code against itself."""
    import bench_fit_time

    with pytest.raises(SystemExit, match="--before .*no regressors package there"):
        bench_fit_time.main(["--before", str(tmp_path / "missing"), "--reps", "1"])
