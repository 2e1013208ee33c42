"""The stack's configuration (``StackConfig``): plain data, so that the command line shows its
defaults (``aigcq regress --help``) without importing the fit (numpy, scikit-learn, Optuna).

``regressors.stacking`` fits with it and re-exports it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class StackConfig:
    heads: tuple[str, ...] = ("svr", "enet", "lgbm", "knn")  # tuned heads (knn: on the non-generator blocks)
    block_head: str | None = "enet"  # kind of the per-block heads (None: off); enet: cheap on 2 cores
    # untuned preset heads (FIXED_PRESETS) to add to the stack; none by default: svr_smooth did not
    # lift the stack on AIGIQA-20K or T2VQA-DB and scored 0.19 on FETV. Panel, 26 sets:
    # none - svr_smooth -0.0009 mean, 2 wins (both full label-only sets) / 3 losses (small T2VQA-DB subsets): kept
    fixed_heads: tuple[str, ...] = ()
    n_trials: int = 12  # per tuned head
    tune_folds: int = 3
    max_tune_items: int = 4000
    tune_fraction: float = 0.5  # of the labelled items, at most, go to the tuning set (nested="split");
    # 0.5 rather than 0.3: T2VQA-DB grouped (7,000 items) stack 0.727 tuned on 3,500 vs 0.712 on 2,100
    outer_folds: int = 5
    nested: str = "auto"  # auto | split | full (see module doc)
    # nested="auto": "split" from this many labelled items, "cross" or "full" below. Panel (docs/defaults.md): on
    # five 3,000-item sets cross gives split's predictions on the items split scores (delta 0.000) and only adds
    # a score for the other half, at 1.7x the time; the final model is the same
    auto_full_below: int = 3000
    # nested="auto": "cross" from this many labelled items up to auto_full_below, "full" below. At 2,982 items
    # (AIGIQA-20K label-only subsample, 400 dims) cross took 0.29x the time of full at the same score (0.7375
    # vs 0.7358 main); full stays on tiny sets (FETV: 174 clips), where it is cheap and tunes on more items.
    # Panel: on five 500-item sets full - cross +0.0068 mean (1 win, 1 loss, 3 ties) at 5x the time;
    # on three 1,000-item sets cross - full +0.0092 mean (1 win, 0 losses) at half the CPU time
    auto_cross_from: int = 1000
    pca: int | None = 128  # per-block PCA for blocks wider than this (None: off)
    interact_components: int = 16  # enet: generator one-hot x this many prompt components (0: off)
    protocol: str = "grouped"  # grouped | random
    seed: int = 0
    storage: str | None = None
    prune: bool = True
    n_jobs: int = -1  # worker processes for tuning and refits (-1: all cores, at most 8); LightGBM 1 thread each
    # nested block selection (regressors.block_selection): on the tuning set, untuned proxy heads propose the
    # smallest block subset that scores within select_tolerance of the best subset (select_confirm decides)
    select_blocks: bool = True
    select_tolerance: float = 0.005
    # the proxies only propose a drop: the heads are then tuned on all blocks and on the proposed subset, and
    # the subset is kept only when its tuned stack scores at least select_margin above all blocks' on the
    # tuning set (heads and meta-learner out-of-fold); False: the proxies' choice is final (the behaviour before
    # issue 20). 0.015: on the evaluation panel the drops that cost on the scored items had gained at most
    # +0.011 on their tuning sets (AIGIQA-20K, 500 items), the drops that paid at least +0.028 (the demo);
    # evidence: docs/defaults.md
    select_confirm: bool = True
    select_margin: float = 0.015
    # every head's prediction and the stack's bounded to the training target range (StackedModel.bounds; issue
    # 21). Panel, 26 sets: bounded - unbounded mean -0.0001, worst -0.0026 (FETV static), no set significant
    bound_scores: bool = True
    # positive (non-negative least squares) | mean | best (see stacking._fit_meta). Panel, 26 sets: positive -
    # mean +0.0011 mean, 4 wins / 2 losses (worst -0.0185, 500 AIGIQA-20K items of 2 generators): kept
    meta_learner: str = "positive"
    # split/cross: the final model reuses the first tuning set's hyper-parameters and meta-learner (reuse), or
    # is tuned again on up to max_tune_items of all items (retune: one more tuning). Panel, final model scored on
    # 20% of prompts held out, five 3,000-item sets: reuse - retune -0.0035 mean, all five ties, at 0.71x the
    # time; kept for the time (one more tuning would likely exceed issue 20's 1.2x cap on the full AIGIQA-20K fit)
    final_tuning: str = "reuse"
    # fit: a generator probe (regressors.generator_probe) fills the generator block of items whose generator
    # is unknown (T2VQA-DB val/test) with probabilities predicted from their content blocks
    generator_probe: bool = False
    engine: str = "local"  # local (n_jobs worker processes) | ray: the same tasks on a Ray cluster (ray_tasks.py)
    trial_workers: int = 1  # engine=ray + storage: Ray tasks sharing each search (order-dependent results)

    def __post_init__(self):
        # checked here, not where each is used: a misspelt meta_learner used to fail only when the first
        # meta-learner was fitted, after every search (minutes to hours), and a NaN margin never compared true,
        # so block selection silently never dropped a block. (All of it inside this method: the evaluation panel's
        # cache key leaves it out, as it changes no value; benchmarks/panel.py _code_of)
        import math

        META_LEARNERS = ("positive", "mean", "best")  # regressors.stacking._fit_meta
        FINAL_TUNINGS = ("reuse", "retune")
        if self.meta_learner not in META_LEARNERS:
            raise ValueError(f"meta_learner must be one of {', '.join(META_LEARNERS)}, got {self.meta_learner!r}")
        if self.final_tuning not in FINAL_TUNINGS:
            raise ValueError(f"final_tuning must be one of {', '.join(FINAL_TUNINGS)}, got {self.final_tuning!r}")
        for name in ("select_margin", "select_tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number (a main-score difference, e.g. 0.015), got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)
