"""Ablations: every extractor alone, all together, and all minus each one.

Every configuration is scored on the *same* outer folds (one ``make_folds`` call on
one aligned item set) with the same seeds, so differences between rows are differences
between feature sets, not between splits. Hyper-parameters are tuned inside each outer
training fold (nested, so the scores are not flattered by tuning on the test fold) and
cached in ``<out>/tuned_params.json`` per (feature keys, head, fold, budget): a rerun,
or a run that adds one extractor, only tunes what is new.

Scores are computed on the pooled out-of-fold predictions (one prediction per item),
with percentile bootstrap intervals; ``delta_main`` is the paired bootstrap difference
to the full set (same resampled items for both), which is much tighter than comparing
two overlapping intervals.

Outputs in ``--out``: ``ablation.csv``, ``ablation.md``, ``ablation.png`` (bars with
intervals), ``predictions.csv`` (out-of-fold prediction per item and configuration),
``per_generator.csv`` and ``tuned_params.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

ALL = "all"


# ----------------------------------------------------------------------- data
@dataclass
class Blocks:
    """Per-extractor feature blocks aligned on one item set."""

    X: dict[str, np.ndarray]  # extractor label -> [N, D]
    keys: dict[str, str]  # extractor label -> store key (hash of its configuration)
    y: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    generators: np.ndarray
    target: str
    dropped: dict[str, int] = field(default_factory=dict)  # label -> items missing from that block

    @property
    def names(self) -> list[str]:
        return list(self.X)

    def matrix(self, names: Sequence[str]) -> tuple[np.ndarray, dict[str, list[int]]]:
        from regressors.heads import blocks_from_dims

        X = np.hstack([self.X[n] for n in names]).astype(np.float64)
        return X, blocks_from_dims({n: self.X[n].shape[1] for n in names})


def _label(spec: Any) -> str:
    from .recipes import spec_name

    return spec_name(spec)


def load_blocks(store: str | os.PathLike, extractors: Sequence[Any], target: str = "mos", split: str | None = "train",
                track: str | None = None) -> Blocks:
    """Read each extractor's block from the store and keep the items every block has.

    Items missing from one block (failed or not computed) are dropped from all, and
    counted in ``dropped`` so the report can say so.
    """
    from features_store import FeatureStore, load_features

    from .recipes import store_key

    if not extractors:
        raise ValueError("no extractors to ablate")
    per: dict[str, tuple] = {}
    keys: dict[str, str] = {}
    for spec in extractors:
        label = _label(spec)
        if label in per:
            raise ValueError(f"extractor {label!r} given twice")
        keys[label] = store_key(store, spec, track)
        X, y, ids, groups = load_features(store, [keys[label]], split=split, target=target)
        per[label] = (np.asarray(X, np.float32), np.asarray(y, float), np.asarray(ids).astype(str), np.asarray(groups))
    common = set.intersection(*(set(v[2]) for v in per.values()))
    if not common:
        raise ValueError(f"{store}: no item has all of {list(per)} computed (and a {target!r} label)")
    first = next(iter(per.values()))
    order = [i for i in first[2] if i in common]  # keep store order
    X, dropped = {}, {}
    y = groups = None
    for label, (Xb, yb, idb, gb) in per.items():
        pos = {iid: k for k, iid in enumerate(idb)}
        take = np.array([pos[i] for i in order])
        X[label] = Xb[take]
        dropped[label] = int(len(idb) - len(take))
        if y is None:
            y, groups = yb[take], gb[take]
    with FeatureStore(os.fspath(store), mode="r") as st:
        frame = st.df.set_index("item_id")
    gens = frame.reindex(order)["generator"].to_numpy(dtype=object)
    gens = np.array(["(none)" if g is None or g != g else str(g) for g in gens], dtype=object)
    return Blocks(X=X, keys=keys, y=np.asarray(y, float), ids=np.asarray(order), groups=np.asarray(groups),
                  generators=gens, target=target, dropped=dropped)


def describe_store(store: str | os.PathLike) -> pd.DataFrame:
    """One row per feature configuration in the store: the name to ablate it by, key, width, counts.

    ``extractor`` is what :func:`run_ablation` accepts (``frames`` configurations are
    listed by their base extractor, which is how recipes name them on the video track).
    """
    from features_store import FeatureStore

    from .recipes import _flat_identity

    path = Path(store)
    if not path.is_file():
        raise FileNotFoundError(f"feature store {path} not found (run `make demo` or `make features` first)")
    rows = []
    with FeatureStore(os.fspath(path), mode="r") as st:
        n = len(st)
        for k in st.keys():
            c = st.config(k)
            name, opts = _flat_identity(c["identity"])
            if name == "frames" and opts.get("base"):
                name = opts["base"]
            rows.append({"extractor": name, "key": k, "dim": c["dim"], "done": c["done"], "failed": c["failed"],
                         "pending": c["pending"], "items": n})
    df = pd.DataFrame(rows, columns=["extractor", "key", "dim", "done", "failed", "pending", "items"])
    dup = df["extractor"].duplicated(keep=False)
    df.loc[dup, "extractor"] = df.loc[dup, "key"]  # two configurations of one name: ablate by key
    return df


# ---------------------------------------------------------------- configurations
def configurations(names: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """(label, kind, subset): the full set, each alone, and all minus each (when > 2 blocks)."""
    names = list(names)
    out = [(ALL, "all", names)]
    if len(names) > 1:
        out += [(f"only {n}", "alone", [n]) for n in names]
    if len(names) > 2:
        out += [(f"all - {n}", "minus", [m for m in names if m != n]) for n in names]
    return out


# ---------------------------------------------------------------------- tuning cache
class ParamCache:
    """JSON file of tuned parameters, keyed by what they were tuned on."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except json.JSONDecodeError:
                self.data = {}  # a half-written cache is only a lost speed-up

    @staticmethod
    def key(**parts: Any) -> str:
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def get(self, key: str):
        hit = self.data.get(key)
        return None if hit is None else hit["params"]

    def snapshot(self) -> "ParamCache":
        """A copy of the entries, with no file: what a task reads while this one is still being written to."""
        copy = ParamCache(None)
        copy.data = dict(self.data)
        return copy

    def put(self, key: str, params: dict, meta: dict) -> None:
        self.data[key] = {"params": params, **meta}
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
            os.replace(tmp, self.path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


# ------------------------------------------------------------------------ running
def _fold_oof(X_all, cols, y, groups, bmap: dict, subset: list[str], head: str, k: int, tr, te, *, trials: int,
              inner_folds: int, seed: int, protocol: str, select: bool, select_cache: dict | None,
              key_parts: dict, known: ParamCache) -> tuple[np.ndarray, list[str], str, dict | None, dict]:
    """One outer fold of one configuration (its columns ``cols`` of ``X_all``, block map ``bmap``): (predictions
    of rows ``te``, blocks read, the tuning cache key,
    {"params", "inner_score"} tuned here or None when ``known`` (the cache's entries) had them, the fold's
    block-subset scores).

    ``select``: inside the training fold, first choose which of the subset's blocks the head reads
    (regressors.block_selection, as the default stack does); ``select_cache`` holds subset scores of this
    fold (same rows and seed) that another configuration computed: a subset scores the same whichever
    configuration offers it.
    """
    from regressors.block_selection import select_blocks
    from regressors.heads import make_head
    from regressors.tuning import tune_head

    X = X_all[:, cols]
    base: dict[str, Any] = {"blocks": bmap}
    use, scores = list(subset), dict(select_cache or {})
    if select and len(subset) > 1:
        use, _ = select_blocks(X[tr], y[tr], groups[tr], bmap, seed=seed + k, protocol=protocol,
                               pca=128,  # the stack's per-block PCA: fast proxies
                               cache=scores)
        if use != list(subset):
            base["use"] = use
    ck = ParamCache.key(**key_parts, **({"use": use} if "use" in base else {}))
    hit = known.get(ck)
    tuned = None
    if trials > 0 and hit is None:
        res = tune_head(head, X[tr], y[tr], groups[tr], base_params=base, n_trials=trials, n_splits=inner_folds,
                        seed=seed, protocol=protocol)
        hit = {k2: v for k2, v in res.params.items() if k2 not in ("blocks", "use")}
        tuned = {"params": hit, "inner_score": res.best_score}
    model = make_head(head, **{**base, **(hit or {})}).fit(X[tr], y[tr])
    return model.predict(X[te]), use, ck, tuned, scores


def ablation_oof(blocks: Blocks, confs: list, head: str, folds, *, trials: int, inner_folds: int, seed: int,
                 protocol: str, cache: ParamCache, select: bool = False, n_jobs: int = -1,
                 progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Out-of-fold predictions of ``head`` for every configuration, tuned inside each training fold:
    ({label: predictions}, {label: blocks read per fold}).

    Every (configuration, fold) is a task on the worker pool (regressors.task_pool). The smaller
    configurations that select blocks start when the full set's fold is done and reuse the subset
    scores it computed (with up to 5 blocks every subset; beyond, backward elimination scores fewer
    and the rest are computed where needed): the same results as computing them again.
    Tuned parameters are read from ``cache`` by the tasks and written to it here, in this process.
    """
    from regressors.heads import blocks_from_dims
    from regressors.task_pool import run_graph, task

    # one matrix of every block (one memory map for the workers); a configuration is a set of its columns
    X_all, spans = blocks.matrix(blocks.names)
    subsets = {label: subset for label, _, subset in confs}
    columns = {label: (np.concatenate([np.arange(*spans[n]) for n in subset]),
                       blocks_from_dims({n: spans[n][1] - spans[n][0] for n in subset})) for label, subset in subsets.items()}

    def fold_task(label: str, k: int, select_cache: dict | None):
        (cols, bmap), subset, (tr, te) = columns[label], subsets[label], folds[k]
        parts = dict(head=head, feats={n: blocks.keys[n] for n in subset}, fold=k, n_folds=len(folds), seed=seed,
                     trials=trials, inner=inner_folds, protocol=protocol, target=blocks.target, n=len(blocks.y),
                     ids=hashlib.sha256("".join(blocks.ids[tr]).encode()).hexdigest()[:12])
        # the arrays as the task's own arguments (large ones reach the workers as memory maps), the rest bound
        fn = partial(_fold_oof, trials=trials, inner_folds=inner_folds, seed=seed, protocol=protocol, select=select,
                     select_cache=select_cache, key_parts=parts,
                     known=cache.snapshot())  # `then` adds entries while tasks are being sent
        return task((label, k), fn, X_all, cols, blocks.y, blocks.groups, bmap, subset, head, k, tr, te,
                    priority=(0 if label == ALL else 1, -len(subset), k))

    # configurations that select among several blocks wait for the full set's fold: they reuse its subset scores
    waits = [label for label in subsets if label != ALL and select and len(subsets[label]) > 1]
    start = [fold_task(label, k, None) for label in subsets if label not in waits for k in range(len(folds))]

    def then(key, result):
        label, k = key
        _, _, ck, tuned, scores = result
        if tuned is not None:
            cache.put(ck, tuned["params"], {"head": head, "subset": subsets[label], "fold": k,
                                            "inner_score": tuned["inner_score"]})
        return [fold_task(other, k, scores) for other in waits] if label == ALL else []

    done = run_graph(start, n_jobs, "ablation", then=then, progress=progress)
    preds, kept = {}, {}
    for label in subsets:
        preds[label], kept[label] = np.full(len(blocks.y), np.nan), []
        for k, (_, te) in enumerate(folds):
            p, use, _, _, _ = done[(label, k)]
            preds[label][te] = p
            kept[label].append("+".join(use))
    return preds, kept


def _paired_delta(pred: np.ndarray, ref: np.ndarray, y: np.ndarray, n_boot: int, seed: int, level: float = 0.95):
    """Bootstrap interval of main(pred) - main(ref) over the same resampled items."""
    from regressors.metrics import MetricError, main_score

    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        try:
            d.append(main_score(pred[idx], y[idx]) - main_score(ref[idx], y[idx]))
        except MetricError:
            continue
    if not d:
        return [np.nan, np.nan]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return [float(np.percentile(d, lo)), float(np.percentile(d, hi))]


@dataclass
class AblationResult:
    table: pd.DataFrame
    predictions: pd.DataFrame
    per_generator: pd.DataFrame
    blocks: Blocks
    out: Path | None
    seconds: float

    def _repr_html_(self):  # notebooks show the table
        return self.table.to_html(index=False, float_format=lambda v: f"{v:.3f}")


def run_ablation(store: str | os.PathLike, extractors: Sequence[Any] | None = None, *, recipe: str | None = None,
                 target: str | None = None, head: str = "svr", trials: int = 10, folds: int | None = None,
                 inner_folds: int = 3, seed: int | None = None, protocol: str | None = None, n_boot: int = 1000,
                 out: str | os.PathLike | None = None, track: str | None = None, split: str | None = "train",
                 progress: bool = True, select_blocks: bool = True, n_jobs: int = -1) -> AblationResult:
    """Run the ablation and (if ``out``) write the table, chart, predictions and cache.

    ``n_jobs``: worker processes for the (configuration, fold) tasks (-1: all cores, at most 8); the
    results do not depend on it.

    ``select_blocks`` (default, as the stack does): in every row with several blocks, the head
    reads the blocks that nested block selection keeps inside each outer training fold, so a row
    says what offering those blocks gives, and the ``kept`` column what was used. Off: the head
    reads every block of the row (the raw value of each block to one head).
    """
    from regressors.metrics import MetricError, evaluate
    from regressors.tuning import make_folds
    t0 = time.perf_counter()
    if recipe is not None:
        from .recipes import load

        r = load(recipe)
        extractors = extractors or r.extractors
        target = target or r.target
        folds = r.folds if folds is None else folds
        seed = r.seed if seed is None else seed
        protocol = protocol or r.protocol
        if track:
            r.check_track(track)
    if not extractors:
        raise ValueError("give extractors=[...] or a recipe")
    target = target or "mos"
    folds, seed, protocol = folds or 5, seed or 0, protocol or "grouped"
    outdir = Path(out) if out is not None else None
    if outdir is not None:  # new, empty or an earlier ablation's (marked): never a folder aigcq did not make
        from regressors.rundir import claim_folder

        claim_folder(outdir, "ablate")
    blocks = load_blocks(store, extractors, target=target, split=split, track=track)
    from dataclasses import replace

    from features_store.targets import check_target
    from regressors import target_scale

    check_target(blocks.y, blocks.ids, target, where=f"{store}: ")  # inf, 1e308, constant, too few: one line
    labels, k = blocks.y, target_scale.exponent(blocks.y)  # an extreme scale (1e-300) is fitted times 2**k
    blocks = replace(blocks, y=target_scale.scale(blocks.y, k))
    cache = ParamCache(outdir / "tuned_params.json" if outdir is not None else None)
    fold_list = make_folds(len(blocks.y), blocks.groups, folds, seed, protocol)
    confs = configurations(blocks.names)
    preds, kept = ablation_oof(blocks, confs, head, fold_list, trials=trials, inner_folds=inner_folds, seed=seed,
                               protocol=protocol, cache=cache, select=select_blocks, n_jobs=n_jobs, progress=progress)
    rows = []  # scores ignore the scale: computed at the fit's (exact) scaling, predictions reported in the target's
    for label, kind, subset in confs:
        p = preds[label]
        try:
            ev = evaluate(p, blocks.y, n_boot=n_boot, seed=seed)
        except MetricError as err:  # e.g. a constant prediction: report, do not crash the table
            rows.append({"config": label, "kind": kind, "extractors": "+".join(subset), "note": str(err)})
            continue
        ci = ev.get("ci", {})
        row = {"config": label, "kind": kind, "extractors": "+".join(subset), "kept": _kept_text(kept[label]),
               "n": ev["n"],
               "main": ev["main"], "main_lo": ci.get("main", [np.nan] * 2)[0], "main_hi": ci.get("main", [np.nan] * 2)[1],
               "srcc": ev["srcc"], "srcc_lo": ci.get("srcc", [np.nan] * 2)[0], "srcc_hi": ci.get("srcc", [np.nan] * 2)[1],
               "plcc": ev["plcc"], "plcc_lo": ci.get("plcc", [np.nan] * 2)[0], "plcc_hi": ci.get("plcc", [np.nan] * 2)[1]}
        if label != ALL and n_boot:
            row["delta_main"] = row["main"] - (rows[0].get("main", np.nan) if rows else np.nan)
            row["delta_lo"], row["delta_hi"] = _paired_delta(p, preds[ALL], blocks.y, min(n_boot, 500), seed)
        rows.append(row)
    table = pd.DataFrame(rows)
    preds = {c: target_scale.unscale(p, k) for c, p in preds.items()}
    blocks = replace(blocks, y=labels)
    pred_df = pd.DataFrame({"item_id": blocks.ids, "generator": blocks.generators, "group": blocks.groups,
                            target: blocks.y, **{f"pred[{k}]": v for k, v in preds.items()}})
    per_gen = per_generator_table(pred_df, target)
    result = AblationResult(table, pred_df, per_gen, blocks, outdir, time.perf_counter() - t0)
    if outdir is not None:
        write_outputs(result, head=head, trials=trials, folds=folds, protocol=protocol, seed=seed, store=str(store),
                      select_blocks=select_blocks)
    return result


def _kept_text(per_fold: list[str]) -> str:
    """'generator+nss (4/5), generator+nss+prompt_minilm (1/5)': the blocks selected per outer fold."""
    from collections import Counter

    counts = Counter(per_fold)
    if len(counts) == 1:
        return per_fold[0]
    return ", ".join(f"{k} ({v}/{len(per_fold)})" for k, v in counts.most_common())


def per_generator_table(pred_df: pd.DataFrame, target: str) -> pd.DataFrame:
    """SRCC within each generator, per configuration (NaN where a generator has < 5 items
    or constant labels): does a feature set rank items *within* a generator, or only
    tell the generators apart?"""
    from scipy.stats import spearmanr

    cols = [c for c in pred_df if c.startswith("pred[")]
    rows = []
    for gen, sub in pred_df.groupby("generator", sort=True):
        row = {"generator": gen, "n": len(sub), f"mean_{target}": float(sub[target].mean())}
        for c in cols:
            ok = len(sub) >= 5 and sub[target].nunique() > 1 and sub[c].nunique() > 1
            row[c[5:-1]] = float(spearmanr(sub[c], sub[target]).statistic) if ok else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ outputs
def _fmt_ci(v, lo, hi) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}"


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| configuration | main [95% CI] | SRCC [95% CI] | PLCC [95% CI] | Δ main vs all [95% CI] | blocks read |",
             "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        if "main" not in r or not np.isfinite(r.get("main", np.nan)):
            lines.append(f"| {r['config']} | {r.get('note', 'n/a')} | | | | |")
            continue
        delta = _fmt_ci(r.get("delta_main", np.nan), r.get("delta_lo", np.nan), r.get("delta_hi", np.nan)) \
            if r["config"] != ALL else "—"
        lines.append(f"| {r['config']} | {_fmt_ci(r['main'], r['main_lo'], r['main_hi'])} | "
                     f"{_fmt_ci(r['srcc'], r['srcc_lo'], r['srcc_hi'])} | {_fmt_ci(r['plcc'], r['plcc_lo'], r['plcc_hi'])} | {delta} | "
                     f"{r.get('kept', '')} |")
    return "\n".join(lines)


def bar_chart(table: pd.DataFrame, path: str | os.PathLike | None = None, title: str = ""):
    """Horizontal bars of the main score with bootstrap intervals; returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = table[table.get("main").notna()] if "main" in table else table.iloc[0:0]
    colours = {"all": "#333333", "alone": "#4c72b0", "minus": "#dd8452"}
    fig, ax = plt.subplots(figsize=(7, 0.42 * max(len(t), 3) + 1.2))
    ypos = np.arange(len(t))[::-1]
    has_ci = len(t) and "main_lo" in t and bool(t["main_lo"].notna().all())
    err = np.vstack([t["main"] - t["main_lo"], t["main_hi"] - t["main"]]) if has_ci else None
    ax.barh(ypos, t["main"], xerr=err, color=[colours.get(k, "grey") for k in t["kind"]], capsize=3, alpha=0.9)
    ax.set_yticks(ypos, t["config"])
    ax.set_xlabel("main = (|SRCC| + |PLCC|) / 2, out-of-fold" + (", 95% bootstrap CI" if has_ci else ""))
    if len(t):
        ax.axvline(float(t["main"].iloc[0]), color="#333333", lw=0.8, ls="--")
        lo, hi = (t["main_lo"], t["main_hi"]) if has_ci else (t["main"], t["main"])
        ax.set_xlim(max(0.0, float(lo.min()) - 0.05), min(1.0, float(hi.max()) + 0.05))
    ax.set_title(title or "ablation")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


#: what an ablation writes into its folder (listed in the folder's marker: a later run may replace them)
OUTPUT_FILES = ("ablation.csv", "predictions.csv", "per_generator.csv", "ablation.png", "ablation.md",
                "tuned_params.json")


def write_outputs(result: AblationResult, **meta: Any) -> None:
    out = result.out
    assert out is not None
    result.table.to_csv(out / "ablation.csv", index=False)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.per_generator.to_csv(out / "per_generator.csv", index=False)
    b = result.blocks
    title = f"ablation: {b.target}, {meta.get('head')} head, {len(b.y)} items"
    bar_chart(result.table, out / "ablation.png", title=title)
    dropped = {k: v for k, v in b.dropped.items() if v}
    text = [
        f"# Ablation — target `{b.target}`",
        "",
        f"Store `{meta.get('store')}`; {len(b.y)} items in {len(np.unique(b.groups))} groups; head `{meta.get('head')}`, "
        f"{meta.get('trials')} Optuna trials per outer fold (nested), {meta.get('protocol')} {meta.get('folds')}-fold, "
        f"seed {meta.get('seed')}. Every row uses the same folds. Intervals: percentile bootstrap over items "
        "(Δ: paired, same resamples). "
        + ("Blocks read: nested block selection inside each outer training fold (as the default stack); "
           "(k/N): chosen in k of N folds." if meta.get("select_blocks") else "Every row reads all its blocks."),
        "",
        markdown_table(result.table),
        "",
        f"Blocks: {', '.join(f'{n} ({b.X[n].shape[1]})' for n in b.names)}."
        + (f" Items dropped because a block lacked them: {dropped}." if dropped else ""),
        "",
        "## SRCC within each generator",
        "",
        frame_markdown(result.per_generator),
        "",
        f"({result.seconds:.0f} s)",
    ]
    (out / "ablation.md").write_text("\n".join(text) + "\n")
    from regressors.rundir import record_files

    record_files(out, [out / n for n in OUTPUT_FILES], job="ablate")


def frame_markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (floats to 3 decimals) without needing tabulate."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "n/a" if not np.isfinite(v) else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from .ablate_args import parser

    ap = parser()
    args = ap.parse_args(argv)
    exs = [s for s in (args.extractors or "").split(",") if s.strip()] or None
    if args.recipe is None and exs is None:
        ap.error("give --recipe or --extractors")
    from features_store.targets import TargetError
    from regressors.rundir import RunFolderError

    try:
        res = run_ablation(args.store, exs, recipe=args.recipe, target=args.target, head=args.head,
                           trials=args.trials, folds=args.folds, inner_folds=args.inner_folds, seed=args.seed,
                           protocol=args.protocol, n_boot=args.n_boot, out=args.out, track=args.track,
                           split=args.split, select_blocks=not args.no_select_blocks, n_jobs=args.jobs)
    except (RunFolderError, TargetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(res.table))
    print(f"\nwrote {res.out}/ablation.md, ablation.csv, ablation.png, per_generator.csv ({res.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    from features_store.console import run_main

    sys.exit(run_main(main))
