"""How far to trust each score: the applicability domain and the prediction interval, fitted with the model.

``regressors.trust_fit.fit_trust`` (training time) fits a :class:`~regressors.domain.DomainDetector` on
the blocks the model reads and a :class:`~regressors.conformal.ConformalIntervals` on the cross-validated
residuals, and keeps both on the fitted model (``model.domain_``, ``model.intervals_``): they are saved
inside ``model.skops`` as plain scikit-learn objects and arrays. ``assess`` (scoring time: ``aigcq score``,
``Predictor.score``, ``aigcq predict``) gives per item ``score_lo``, ``score_hi``, ``in_domain`` and
``domain_score``; this module imports nothing of the fit.
A bundle saved before these existed gives NaN / NA in those columns.
"""
from __future__ import annotations

import numpy as np

from .conformal import DEFAULT_LEVEL, ConformalIntervals, head_spread
from .domain import DomainDetector

TRUST_COLUMNS = ("score_lo", "score_hi", "in_domain", "domain_score")


def assess(model, X, pred, level: float | None = None) -> dict[str, np.ndarray]:
    """Per row of ``X`` (whose scores are ``pred``): score_lo, score_hi, in_domain (True/False, or None
    when the model has no detector), domain_score."""
    n = len(pred)
    out = {"score_lo": np.full(n, np.nan), "score_hi": np.full(n, np.nan),
           "in_domain": np.full(n, None, dtype=object), "domain_score": np.full(n, np.nan)}
    if n == 0:
        return out
    det: DomainDetector | None = getattr(model, "domain_", None)
    if det is not None:
        out["domain_score"] = det.score(X)
        out["in_domain"] = (out["domain_score"] <= 1.0).astype(object)
    ci: ConformalIntervals | None = getattr(model, "intervals_", None)
    if ci is not None:
        difficulty = None
        if ci.mode_ == "spread":
            # heads fitted to the target times 2**k (regressors.target_scale): their spread in the target's units
            k = getattr(model, "target_scale_exp", None)
            k = getattr(getattr(model, "model", None), "target_scale_exp", 0) if k is None else k
            heads = {h: np.ldexp(np.asarray(v, float), -k) if k else v for h, v in model.predict_heads(X).items()}
            difficulty = head_spread({h: heads[h] for h in ci.heads_}, ci.y_min_, ci.y_max_)
        elif ci.mode_ == "distance":
            difficulty = out["domain_score"]
        out["score_lo"], out["score_hi"] = ci.interval(pred, difficulty, level)
    return out


def trust_summary(trust: dict[str, np.ndarray], y=None) -> dict:
    """metrics.json of a scored split: how many items are out of domain, the mean interval width, and (labelled)
    the share of targets inside their interval."""
    out: dict = {}
    judged = np.array([v is not None for v in trust["in_domain"]], bool)
    if judged.any():
        out["out_of_domain"] = int(sum(1 for v in trust["in_domain"] if v is False))
    width = trust["score_hi"] - trust["score_lo"]
    if np.isfinite(width).any():
        out["interval_mean_width"] = float(np.nanmean(width))
        if y is not None:
            y = np.asarray(y, float)
            out["interval_coverage"] = float(np.mean((y >= trust["score_lo"]) & (y <= trust["score_hi"])))
    return out


def card_lines(info: dict) -> list[str]:
    """MODEL.md's section on in_domain, domain_score, score_lo and score_hi."""
    t = info.get("trust")
    if not t:
        return ["## Trust", "", "This bundle predates `in_domain` and prediction intervals: those columns are empty "
                "when scoring; train again to get them.", ""]
    target = info.get("target", {})
    lines = ["## Trust in each score", ""]
    lo, hi = target.get("min"), target.get("max")
    if lo is not None and hi is not None:
        lines += [f"Prediction intervals are bounded to the training target range {lo:.3f} – {hi:.3f}.", ""]
    d = t.get("domain", {})
    if d.get("blocks"):
        judged = ", ".join(d["blocks"])
        lines += [f"`in_domain` says whether an item's features ({judged}) lie as close to the training items as "
                  f"held-out training items do: `domain_score` is its mean distance to its {d.get('n_neighbors')} "
                  f"nearest training items, per block over that block's typical held-out distance, largest block "
                  f"first, and over the boundary; above 1 is `in_domain` False. The boundary was set on out-of-fold "
                  f"training items (new prompts) so that {100 * d.get('false_flag_rate', 0):.0f}% of them would be "
                  f"flagged ({100 * d.get('oof_flag_rate', 0):.1f}% were, of {d.get('calibration_items')}). A score "
                  "out of domain is an extrapolation: treat it as unknown.", ""]
        if d.get("label_only"):
            lines += ["**This model reads no feature of the media itself** (only the prompt and the generator "
                      "name): `in_domain` judges only whether the prompt is like the training prompts; a text page "
                      "or noise with a familiar prompt is in domain to it.", ""]
    else:
        lines += ["**`in_domain` is empty**: the model reads only the generator name, which has no distance to "
                  "measure; it cannot tell a foreign input from a familiar one.", ""]
    iv = t.get("intervals", {})
    if iv:
        check = iv.get("cross_conformal", {}).get(iv.get("mode"), {})
        how = {"standard": "one width for every item",
               "spread": "wider where the stack's heads disagree on the item",
               "distance": "wider the farther the item lies from the training items"}.get(iv.get("mode"), "")
        lines += [f"`score_lo` – `score_hi`: a {100 * iv.get('level', DEFAULT_LEVEL):.0f}% prediction interval "
                  f"(conformal, on {iv.get('calibration_items')} cross-validated residuals; {how}; "
                  f"`--level` changes it). Checked on held-out folds of those residuals: coverage "
                  f"{100 * check.get('coverage', float('nan')):.1f}%, mean width {check.get('mean_width', float('nan')):.3f}.",
                  ""]
    return lines
