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
    """Fitted base heads + non-negative linear meta-learner. Picklable."""

    def __init__(self, heads: dict[str, Any], meta: LinearRegression, info: dict):
        self.heads = heads
        self.meta = meta
        self.info = info

    @property
    def names(self) -> list[str]:
        return list(self.heads)

    def predict_heads(self, X) -> dict[str, np.ndarray]:
        return {n: h.predict(X) for n, h in self.heads.items()}

    def combine(self, head_preds: dict[str, np.ndarray]) -> np.ndarray:
        """The stack's prediction from its heads' predictions (as predict_heads gives them)."""
        return self.meta.predict(np.column_stack([head_preds[n] for n in self.names]))

    def predict(self, X) -> np.ndarray:
        # the heads were fitted to the target times 2**target_scale_exp (regressors.target_scale; 0 for ordinary
        # targets, and for models saved before it existed): their combination is divided by it, exactly
        k = getattr(self, "target_scale_exp", 0)
        out = self.combine(self.predict_heads(X))
        return out if not k else np.ldexp(out, -k)

    def weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.meta.coef_)}
