"""metrics.json helpers, report.md tables and the scatter plot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import MetricError, evaluate, fit_mapping


def safe_evaluate(pred, target, **kw) -> dict:
    """evaluate(), or {"error": reason, "n": n} where the metric is undefined (e.g. 3 items)."""
    try:
        return evaluate(pred, target, **kw)
    except MetricError as err:
        return {"error": str(err), "n": int(np.size(pred))}


def per_group(pred, target, labels, n_boot: int = 0) -> dict[str, dict]:
    """Metrics inside each label (e.g. generator). Inside one generator the generator floor is
    useless, so this shows how well the prompt/pixel part ranks items."""
    labels = np.asarray(labels, dtype=object)
    out = {}
    for lab in sorted({str(x) for x in labels}):
        m = np.array([str(x) == lab for x in labels])
        out[lab] = safe_evaluate(np.asarray(pred)[m], np.asarray(target)[m], n_boot=n_boot)
        out[lab]["mean_target"] = float(np.mean(np.asarray(target)[m]))
        out[lab]["mean_prediction"] = float(np.mean(np.asarray(pred)[m]))
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _fmt(v, nd=4):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def _row(name: str, m: dict) -> str:
    if "error" in m:
        return f"| {name} | {m.get('n', '')} | – | – | – | – | – | {m['error']} |"
    ci = m.get("ci", {}).get("main")
    ci_txt = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return (f"| {name} | {m['n']} | {_fmt(m['main'])} | {_fmt(m['srcc'])} | {_fmt(m['plcc'])} | "
            f"{_fmt(m['krcc'])} | {_fmt(m['rmse'], 3)} | {ci_txt} |")


HEADER = "| model | n | main | SRCC | PLCC | KRCC | RMSE | 95% CI main |\n|---|---|---|---|---|---|---|---|"


def markdown_report(metrics: dict) -> str:
    lines = [f"# {metrics.get('track', '')} track: {metrics.get('target', 'mos')} regression", ""]
    lines += [f"Extractors: {', '.join(f'`{k}`' for k in metrics.get('store_keys', {}).values())}  ",
              f"Protocol: {metrics.get('protocol')} {metrics.get('folds')}-fold, nesting `{metrics.get('nested')}` "
              f"({metrics.get('nested_note', '')})", "", "## Final stacked model", "", HEADER,
              _row("stack (cross-validated)", metrics)]
    for split, m in metrics.get("heldout", {}).items():
        lines.append(_row(f"stack on held-out `{split}`", m))
    lines += ["", "## Base heads (same folds)", "", HEADER]
    for name, m in metrics.get("heads", {}).items():
        lines.append(_row(name, m))
    lines += ["", "## One head per extractor block", "", HEADER]
    for name, m in metrics.get("blocks", {}).items():
        lines.append(_row(name, m))
    sel = metrics.get("block_selection")
    if sel:
        lines += ["", "## Blocks the final model reads (nested block selection on its tuning set)", "",
                  f"Kept: {', '.join(sel.get('kept', []))}; dropped: {', '.join(sel.get('dropped', [])) or 'none'} "
                  f"(proxy-head scores of the subsets tried: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sel.get("scores", {}).items()) + ")"]
        confirm = sel.get("confirm")
        if confirm:  # the proxies proposed a drop; the tuned stacks on both layouts decided
            lines.append(f"\nThe proxies proposed {', '.join(sel.get('proposed', []))}; tuned stacks on the tuning set "
                         f"(out-of-fold main): all blocks {confirm['all_blocks']:.3f}, proposed "
                         f"{confirm['proposed']:.3f} (kept: {confirm['kept']}; a drop needs the proposed subset "
                         f"{confirm['margin']} above all blocks).")
    w = metrics.get("meta_weights", {})
    if w:
        lines += ["", "## Meta-learner weights (non-negative)", "", "| head | weight |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in w.items()]
    pg = metrics.get("per_generator", {})
    if pg:
        lines += ["", "## Per generator (stack, cross-validated)", "",
                  "| generator | n | main | SRCC | PLCC | mean MOS | mean prediction |", "|---|---|---|---|---|---|---|"]
        for g, m in pg.items():
            if "error" in m:
                lines.append(f"| {g} | {m['n']} | – | – | – | {_fmt(m.get('mean_target'), 3)} | "
                             f"{_fmt(m.get('mean_prediction'), 3)} |")
            else:
                lines.append(f"| {g} | {m['n']} | {_fmt(m['main'])} | {_fmt(m['srcc'])} | {_fmt(m['plcc'])} | "
                             f"{_fmt(m['mean_target'], 3)} | {_fmt(m['mean_prediction'], 3)} |")
    t = metrics.get("timing", {})
    if t:
        lines += ["", "## Timing", "", *[f"- {k}: {v:.1f} s" if isinstance(v, float) else f"- {k}: {v}"
                                        for k, v in t.items()]]
    return "\n".join(lines) + "\n"


def scatter_plot(pred, target, path: Path, title: str = "", fit: str = "cubic") -> None:
    """Prediction vs MOS with the fitted mapping, as in the challenge report's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, target = np.asarray(pred, float), np.asarray(target, float)
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=120)
    ax.scatter(pred, target, s=4, alpha=0.35, edgecolors="none")
    try:
        xs = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(xs, fit_mapping(pred, target, fit)(xs), color="crimson", lw=1.5, label=f"{fit} fit")
        ax.legend(loc="upper left")
    except Exception:  # a degenerate fit must not lose the plot  # noqa: BLE001
        pass
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
