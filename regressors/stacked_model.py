"""The fitted stack as a bundle holds it: base heads and the linear meta-learner over their predictions.

It lives apart from the fit (``regressors.stacking``, which re-exports it) so that loading a model
to score imports numpy and the heads' scikit-learn classes, not Optuna or the task pool.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LinearRegression


class StackedModel:
    """Fitted base heads + non-negative linear meta-learner, bounded to the training target range. Picklable.

    ``bounds`` = (lo, hi), the range of the target the heads were fitted on (in the heads' units,
    i.e. times 2**target_scale_exp): every head's prediction is clipped to it before the
    meta-learner combines them, and so is the stack's. A linear head extrapolates without limit
    on features unlike any training item (the demo model, unbounded, scored a page of text -24.58
    on a 1.14-5.0 scale: ElasticNet -44.35, the nss block head -66.59), so a bounded head cannot
    drag the others' vote, and no score leaves the range the model was trained on. ``None``:
    unbounded (``StackConfig.bound_scores=False``, or a model saved before bounds existed, which
    has no such attribute).
    """

    def __init__(self, heads: dict[str, Any], meta: LinearRegression, info: dict,
                 bounds: tuple[float, float] | None = None):
        self.heads = heads
        self.meta = meta
        self.info = info
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))

    @property
    def names(self) -> list[str]:
        return list(self.heads)

    def predict_heads(self, X) -> dict[str, np.ndarray]:
        """Every head's own prediction (unbounded: what the head says)."""
        return {n: h.predict(X) for n, h in self.heads.items()}

    def combine(self, head_preds: dict[str, np.ndarray]) -> np.ndarray:
        """The stack's prediction from its heads' predictions (as predict_heads gives them), bounded."""
        return bounded_combine(self.meta, np.column_stack([head_preds[n] for n in self.names]),
                               getattr(self, "bounds", None))

    def predict(self, X) -> np.ndarray:
        # the heads were fitted to the target times 2**target_scale_exp (regressors.target_scale; 0 for ordinary
        # targets, and for models saved before it existed): their combination is divided by it, exactly
        k = getattr(self, "target_scale_exp", 0)
        out = self.combine(self.predict_heads(X))
        return out if not k else np.ldexp(out, -k)

    def weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.meta.coef_)}


def clip_to(values: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """``values`` clipped to ``bounds`` (lo, hi); unchanged when ``bounds`` is None."""
    return values if bounds is None else np.clip(values, bounds[0], bounds[1])


def bounded_combine(meta: LinearRegression, head_preds: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """The meta-learner's combination of the heads' predictions (columns), each bounded first, bounded again."""
    return clip_to(meta.predict(clip_to(np.asarray(head_preds, dtype=np.float64), bounds)), bounds)
