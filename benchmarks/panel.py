"""The evaluation panel: the default fit against alternatives on sets nobody tuned the defaults on.

Every change to a fit default reports this panel before and after (issue 20). For each set
(``benchmarks/panel_sets.py``: label-only subsets of AIGIQA-20K and T2VQA-DB drawn by issue 20's
recipe, both full label-only sets, FETV static / temporal / alignment on frames, the demo and the
demo + a 1,000-column noise block) it runs the honest nested cross-validation that ``aigcq regress``
reports (``regressors.stacking.cross_validate``) with the default ``StackConfig`` and with each
``--alt``, then prints main of each and the paired difference *default - alt* with a 95% interval
from a paired bootstrap over whole groups (prompts; the demo's source photos): both predictions of
one resample come from the same resampled groups. Then a summary per alternative: mean difference,
the worst set, and wins / losses / ties (an interval above 0, below 0, or across it).

    nice -n 10 python benchmarks/panel.py --alt select_blocks=false
    nice -n 10 python benchmarks/panel.py --alt "nested=full" --sets 'aigiqa-1000-*,t2vqa-1000-*'
    python benchmarks/panel.py --list
    python benchmarks/panel.py --render benchmarks/results/panel.json      # the markdown table again

An alternative is ``field=value`` pairs of ``StackConfig`` joined by ``;`` (a tuple field takes a
comma list: ``heads=svr,enet``); ``--alt`` may be given several times. The panel's own settings
(``--trials``, ``--jobs``) apply to the default and to every alternative alike.

Budget: ``--trials`` (default 6 per tuned head, the library's default is 12) keeps the whole panel
near an hour on 2 cores; ``--trials 12`` on some sets shows whether that changes the ranking
(docs/panel.md). Results of each (set, configuration) are kept in the cache folder under a hash of
the set, every field of the configuration and the code of the ``regressors`` package in use
(comments, docstrings and StackConfig's default values aside: see ``_code_of``), so an interrupted
panel resumes and a rerun with the same code recomputes nothing (``--no-reuse`` to refit).

Writes ``benchmarks/results/panel.json`` (``--out``): ``{"meta": {...}, "rows": [...], "summary":
{...}}``, and the markdown table (``--md``, default ``docs/panel.md``'s companion
``benchmarks/results/panel.md``).
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: |difference| below this counts as a tie in the issue's sense too (default >= alt - 0.005 is "no cost")
TOLERANCE = 0.005


# ---------------------------------------------------------------- configurations
def parse_alt(spec: str) -> dict:
    """``"select_blocks=false;nested=full"`` -> {field: value} typed as StackConfig's defaults are."""
    from regressors.stacking import StackConfig

    fields = {f.name: f for f in dataclasses.fields(StackConfig)}
    defaults = StackConfig()
    out = {}
    for part in [p.strip() for p in spec.split(";") if p.strip()]:
        if "=" not in part:
            raise SystemExit(f"--alt {spec!r}: {part!r} is not field=value")
        key, raw = (s.strip() for s in part.split("=", 1))
        if key not in fields:
            raise SystemExit(f"--alt {spec!r}: StackConfig has no field {key!r}; fields: {sorted(fields)}")
        cur = getattr(defaults, key)
        if raw.lower() in ("none", "null"):
            val = None
        elif isinstance(cur, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--alt {spec!r}: {key} takes true or false, got {raw!r}")
            val = raw.lower() in ("true", "1")
        elif isinstance(cur, (int, float)):
            try:
                val = type(cur)(raw)
            except ValueError:
                raise SystemExit(f"--alt {spec!r}: {key} takes a{'n integer' if isinstance(cur, int) else ' number'}, "
                                 f"got {raw!r}") from None
        elif isinstance(cur, tuple):
            val = tuple(x for x in raw.split(",") if x)
        else:
            val = raw
        out[key] = val
    try:  # StackConfig checks its values (meta_learner=bogus): refused now, not after the first set's fits
        dataclasses.replace(defaults, **out)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--alt {spec!r}: {err}") from None
    return out


def alt_label(overrides: dict) -> str:
    return ";".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in overrides.items()) or "default"


# ---------------------------------------------------------------- one fit, cached
def _code_of(source: str) -> str:
    """The code of a module without what cannot change a result: comments, docstrings, the default values of
    ``StackConfig`` (a fit's key holds every field's value, so changing a default reuses the fits it leaves alone)
    and its ``__post_init__``, which checks the values and changes none (tests/test_block_selection.py)."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.ClassDef) and node.name == "StackConfig":
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    stmt.value = None
            # its check of the values only raises (a config it accepts is fitted as before), so adding one
            # does not throw away an hour of cached fits
            node.body = [s for s in node.body if not (isinstance(s, ast.FunctionDef) and s.name == "__post_init__")]
    return ast.dump(tree)


def code_hash() -> str:
    """Hash of the code a fit runs: every ``regressors`` module that ``regressors.stacking`` imports (a result is
    reused only for the same code; modules the fit never imports, e.g. the bundle or the conformal intervals,
    do not count)."""
    import regressors.stacking  # noqa: F401 - imports what a fit runs

    h = hashlib.sha256()
    files = {Path(m.__file__) for name, m in list(sys.modules.items())
             if (name == "regressors" or name.startswith("regressors.")) and getattr(m, "__file__", None)}
    for p in sorted(files, key=lambda f: f.name):
        h.update(p.name.encode() + _code_of(p.read_text()).encode())
    return h.hexdigest()[:16]


def _selections(info: dict) -> list[dict]:
    """Block selection of every tuning set of a cross-validation (what the proxies proposed, what was kept)."""
    parts = [info.get("tuning_set", {}), info.get("tuning_set_swapped", {})] + list(info.get("outer", []))
    return [{k: v for k, v in p["block_selection"].items() if k in ("kept", "proposed", "confirm")}
            for p in parts if p and p.get("block_selection")]


def _kept(info: dict) -> list[str]:
    return ["+".join(s["kept"]) for s in _selections(info)]


def run_fit(ps, data, cfg, cache: Path | None, code: str, holdout: float = 0.0) -> dict:
    """Out-of-fold predictions of the stack on the set (or, with ``holdout``, the final model's predictions
    of a held-out share of the groups): {"rows", "pred", "seconds", "nested", "kept"}."""
    from regressors.stacking import cross_validate

    key = hashlib.sha256(json.dumps({"set": dataclasses.asdict(ps), "cfg": cfg.to_dict(), "code": code,
                                     "holdout": holdout}, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache / f"{key}.json" if cache else None
    if path is not None and path.is_file():
        out = json.loads(path.read_text())
        out["rows"], out["pred"] = np.asarray(out["rows"], int), np.asarray(out["pred"], float)
        out["reused"] = True
        return out
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    if holdout:
        train, test = holdout_split(data.groups, holdout, seed=1000 + cfg.seed)
        cv = cross_validate(data.X[train], data.y[train], data.groups[train], data.blocks, cfg,
                            final_predict=data.X[test])
        rows, pred = test, cv["final_predictions"]
    else:
        cv = cross_validate(data.X, data.y, data.groups, data.blocks, cfg)
        rows, pred = cv["scored"], cv["stack"]
    out = {"rows": np.asarray(rows, int), "pred": np.asarray(pred, float), "seconds": time.perf_counter() - t0,
           "cpu_seconds": cpu_seconds() - cpu0,
           "nested": cv["info"]["nested"], "kept": _kept(cv["info"]),
           "selections": _selections(cv["info"]), "load": os.getloadavg()[0], "reused": False}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**out, "rows": out["rows"].tolist(), "pred": out["pred"].tolist()}))
        tmp.replace(path)
    return out


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its worker processes so far; NaN without psutil. On a shared
    machine this, not the wall time, says what the panel costs: 2 idle cores do ~2 CPU-seconds per second."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    t = me.cpu_times()
    # this process, its ended (reaped) worker processes, and the live ones (loky replaces idle workers)
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # a worker that just ended
            pass
    return total


def holdout_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): a random ``fraction`` of the groups held out whole."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    test_groups = rng.choice(uniq, max(1, int(round(fraction * len(uniq)))), replace=False)
    test = np.isin(groups, test_groups)
    return np.flatnonzero(~test), np.flatnonzero(test)


# ---------------------------------------------------------------- statistics
def paired_bootstrap(a: np.ndarray, b: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of main(a) - main(b) over resamples of whole groups (the same resample for both)."""
    from regressors.metrics import MetricError, main_score

    uniq, inv = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n_boot):
        weight = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[inv]
        idx = np.repeat(np.arange(len(y)), weight)
        try:
            d.append(main_score(a[idx], y[idx]) - main_score(b[idx], y[idx]))
        except MetricError:
            continue
    if not d:
        return float("nan"), float("nan")
    lo, hi = np.percentile(d, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def outcome(lo: float, hi: float) -> str:
    """win / loss / tie of the default against the alternative: the interval above 0, below 0, or across it."""
    if lo > 0:
        return "win"
    if hi < 0:
        return "loss"
    return "tie"


def summarise(rows: list[dict]) -> dict:
    out = {}
    for label in dict.fromkeys(r["alt"] for r in rows):
        rs = [r for r in rows if r["alt"] == label]
        deltas = np.array([r["delta"] for r in rs])
        worst = rs[int(np.argmin(deltas))]
        out[label] = {"sets": len(rs), "mean_delta": float(deltas.mean()), "median_delta": float(np.median(deltas)),
                      "worst_delta": float(worst["delta"]), "worst_set": worst["set"],
                      "best_delta": float(deltas.max()),
                      "wins": sum(r["outcome"] == "win" for r in rs), "losses": sum(r["outcome"] == "loss" for r in rs),
                      "ties": sum(r["outcome"] == "tie" for r in rs),
                      "below_minus_tolerance": [r["set"] for r in rs if r["delta"] < -TOLERANCE],
                      "seconds_default": float(sum(r["seconds_default"] for r in rs)),
                      "seconds_alt": float(sum(r["seconds_alt"] for r in rs)),
                      "cpu_seconds_default": float(sum(r.get("cpu_seconds_default") or np.nan for r in rs)),
                      "cpu_seconds_alt": float(sum(r.get("cpu_seconds_alt") or np.nan for r in rs))}
    return out


# ---------------------------------------------------------------- output
def render(result: dict) -> str:
    """Markdown: the meta line, one table per alternative, the summary."""
    m = result["meta"]
    return (f"Panel run {m['date']} (code {m.get('code_label') or m['commit'][:10]}, {m['machine']}, "
            f"{m['cpu_count']} CPUs, load {m['load_avg_start']} → {m['load_avg']}); "
            f"{m['trials']} trials per tuned head; `{m['command']}`\n\n" + render_tables(result))


def render_tables(result: dict) -> str:
    """One table per alternative and its summary (the docs' renderer: ``meta.renderer`` = "panel:render_tables")."""
    lines = [f"{result['meta']['trials']} Optuna trials per tuned head.", ""]
    for label, s in result["summary"].items():
        lines += [f"**default − `{label}`** (main; Δ = default − alternative, 95% paired bootstrap over groups)", "",
                  "| set | items (scored) | nesting | default | alternative | Δ [95% CI] | | blocks read: default / alternative |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in result["rows"] if r["alt"] == label):
            lines.append(f"| {r['set']} | {r['n']} ({r['n_scored']}) | {r['nested']} | {r['main_default']:.3f} | "
                         f"{r['main_alt']:.3f} | {r['delta']:+.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}] | "
                         f"{r['outcome']} | {_kept_cell(r['kept_default'])} / {_kept_cell(r['kept_alt'])} |")
        below = ", ".join(s["below_minus_tolerance"]) or "none"
        cpu = (s.get("cpu_seconds_default"), s.get("cpu_seconds_alt"))
        cpu_note = (f" (CPU {cpu[0] / 60:.1f} and {cpu[1] / 60:.1f} min)"
                    if all(c is not None and c == c and c > 0 for c in cpu) else "")
        lines += ["", f"Summary: {s['sets']} sets, mean Δ {s['mean_delta']:+.4f}, median {s['median_delta']:+.4f}, "
                      f"worst {s['worst_delta']:+.4f} ({s['worst_set']}), best {s['best_delta']:+.4f}; "
                      f"wins / losses / ties {s['wins']} / {s['losses']} / {s['ties']}; "
                      f"sets with Δ < −{TOLERANCE}: {below}. Fit time default {s['seconds_default'] / 60:.1f} min, "
                      f"alternative {s['seconds_alt'] / 60:.1f} min{cpu_note}.", ""]
    return "\n".join(lines)


def render_hindsight(result: dict) -> str:
    """The default against every block subset fitted without selection (``--hindsight SET``)."""
    s = result["summary"]
    lines = [f"Set {s['set']}: the default (reads {_kept_cell(s['default_kept'])}) scores {s['default']:.3f}; the best "
             f"subset in hindsight, {s['best_subset']}, {s['best_main']:.3f} (default − best "
             f"{s['default_minus_best']:+.3f}).", "",
             "| blocks (no selection) | main | default − subset [95% CI] |", "|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: -r["main"]):
        lines.append(f"| {r['subset']} | {r['main']:.3f} | {r['default_minus_subset']:+.3f} "
                     f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] |")
    return "\n".join(lines)


def _kept_cell(kept: list[str]) -> str:
    """'generator+prompt_minilm (3/5), generator (2/5)': the blocks each tuning set kept, counted."""
    if not kept:
        return "all"
    counts = {k: kept.count(k) for k in dict.fromkeys(kept)}
    if len(counts) == 1:
        return next(iter(counts)) + (f" ({len(kept)}/{len(kept)})" if len(kept) > 1 else "")
    return ", ".join(f"{k} ({c}/{len(kept)})" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]))


def _git(*args: str, cwd: Path = REPO) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def select_sets(patterns: str | None):
    from panel_sets import SETS

    if not patterns:
        return list(SETS)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [s for s in SETS if any(fnmatch.fnmatch(s.name, p) for p in pats)]
    if not chosen:
        raise SystemExit(f"--sets {patterns!r} matches no set; --list shows them")
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alt", action="append", default=[], help="an alternative: field=value[;field=value] "
                    "(repeatable; default: select_blocks=false)")
    ap.add_argument("--base", default="", help="overrides of the reference configuration (default: StackConfig())")
    ap.add_argument("--sets", default=None, help="comma list of set names or globs (default: all; --list)")
    ap.add_argument("--trials", type=int, default=6, help="Optuna trials per tuned head, every configuration")
    ap.add_argument("--jobs", type=int, default=-1, help="worker processes per fit (-1: all cores)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--holdout", type=float, default=0.0,
                    help="score the final model on this share of the groups held out (instead of the CV)")
    ap.add_argument("--out", default=str(HERE / "results" / "panel.json"))
    ap.add_argument("--md", default=None, help="markdown table (default: --out with .md)")
    ap.add_argument("--no-reuse", action="store_true", help="refit every (set, configuration)")
    ap.add_argument("--code", default=None, help="import regressors from this checkout (e.g. an older commit "
                    "unpacked with git archive) instead of this one")
    ap.add_argument("--code-label", default=None, help="what --code is (e.g. main@014f738), for the JSON")
    ap.add_argument("--hindsight", default=None, metavar="SET",
                    help="instead: every non-empty subset of SET's blocks without selection, and the default on all "
                         "of them (the best subset in hindsight is the bar for block selection)")
    ap.add_argument("--list", action="store_true", help="list the sets and exit")
    ap.add_argument("--render", nargs="+", default=None, help="print the markdown of these panel JSON files")
    args = ap.parse_args(argv)
    if args.code:  # this process and its worker processes (which read PYTHONPATH) import that checkout
        code_dir = str(Path(args.code).resolve())
        if not (Path(code_dir) / "regressors" / "__init__.py").is_file():
            # otherwise the import below silently falls back to this checkout: a "before" panel of the new code
            raise SystemExit(f"--code {args.code}: no regressors package there (a checkout's root, e.g. one "
                             f"unpacked with git archive)")
        sys.path.insert(0, code_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join([code_dir, os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0 if not args.code else 1, str(REPO))
    sys.path.insert(0, str(HERE))
    if args.render:
        for f in args.render:
            print(render(json.loads(Path(f).read_text())))
        return 0
    if args.list:
        for s in select_sets(args.sets):
            print(f"{s.name:24s} {s.family:20s} target {s.target}" + (f", {s.n} items, {s.gens or 'all'} generators, "
                                                                     f"seed {s.seed}" if s.n else ""))
        return 0
    from threadpoolctl import threadpool_limits

    import regressors.task_pool as task_pool

    bar = task_pool.tqdm
    task_pool.tqdm = lambda *a, **k: bar(*a, **{**k, "disable": True})  # one line per set, not a bar per fit
    try:
        with threadpool_limits(1, user_api="blas"):  # as `aigcq regress` (--blas-threads 1)
            return run_panel(args)
    finally:
        task_pool.tqdm = bar


def run_panel(args) -> int:
    import regressors
    from panel_sets import CACHE, load_set
    from regressors.metrics import main_score
    from regressors.stacking import StackConfig

    if args.code and Path(regressors.__file__).resolve().parents[1] != Path(args.code).resolve():
        raise SystemExit(f"--code {args.code}: regressors was already imported from "
                         f"{Path(regressors.__file__).resolve().parent} in this process")
    code = code_hash()
    base = StackConfig(**{**StackConfig().to_dict(), **parse_alt(args.base), "n_trials": args.trials,
                          "n_jobs": args.jobs})
    if args.hindsight:
        return hindsight(args, base, code)
    alts = [parse_alt(a) for a in (args.alt or ["select_blocks=false"])]
    sets = select_sets(args.sets)
    started, load0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), [round(x, 2) for x in os.getloadavg()]
    cache = None if args.no_reuse else CACHE / "fits"
    print(f"panel: {len(sets)} sets x (default + {len(alts)} alternatives), {args.trials} trials per head; regressors "
          f"from {Path(regressors.__file__).parent} (code {code}); load {load0}", flush=True)
    rows = []
    t_all = time.perf_counter()
    for ps in sets:
        data = load_set(ps)
        ref = run_fit(ps, data, base, cache, code, args.holdout)
        for ov in alts:
            cfg = dataclasses.replace(base, **ov)
            alt = run_fit(ps, data, cfg, cache, code, args.holdout)
            common, ia, ib = np.intersect1d(ref["rows"], alt["rows"], return_indices=True)
            a, b, y, g = ref["pred"][ia], alt["pred"][ib], data.y[common], data.groups[common]
            ma, mb = main_score(a, y), main_score(b, y)
            lo, hi = paired_bootstrap(a, b, y, g, args.n_boot, seed=0)
            row = {"set": ps.name, "family": ps.family, "target": ps.target, "alt": alt_label(ov),
                   "n": int(len(data.y)), "n_scored": int(len(common)), "groups": int(len(np.unique(g))),
                   "blocks": {b_: r[1] - r[0] for b_, r in data.blocks.items()}, "nested": ref["nested"],
                   "nested_alt": alt["nested"], "main_default": ma, "main_alt": mb, "delta": ma - mb,
                   "delta_lo": lo, "delta_hi": hi, "outcome": outcome(lo, hi),
                   "seconds_default": ref["seconds"], "seconds_alt": alt["seconds"],
                   "cpu_seconds_default": ref.get("cpu_seconds"), "cpu_seconds_alt": alt.get("cpu_seconds"),
                   "kept_default": ref["kept"], "kept_alt": alt["kept"], "reused": [ref["reused"], alt["reused"]]}
            rows.append(row)
            print(f"{ps.name:22s} {alt_label(ov):28s} n {len(common):5d}  default {ma:.4f}  alt {mb:.4f}  "
                  f"Δ {ma - mb:+.4f} [{lo:+.4f}, {hi:+.4f}] {row['outcome']:4s}  {ref['seconds']:.0f}+{alt['seconds']:.0f} s"
                  f"  kept {sorted(set(ref['kept']))}  load {os.getloadavg()[0]:.1f}", flush=True)
    summary = summarise(rows)
    meta = {"date": started, "commit": _git("rev-parse", "HEAD"), "renderer": "panel:render_tables", "dirty": bool(_git("status", "--porcelain")),
            "code": str(Path(regressors.__file__).parent.parent), "code_label": args.code_label, "code_hash": code,
            "machine": _machine(), "cpu_count": os.cpu_count(), "load_avg_start": load0,
            "load_avg": [round(x, 2) for x in os.getloadavg()], "command": " ".join(["python", *sys.argv]),
            "trials": args.trials, "jobs": args.jobs, "n_boot": args.n_boot, "holdout": args.holdout,
            "tolerance": TOLERANCE, "default_config": base.to_dict(), "alternatives": [alt_label(a) for a in alts],
            "sets": [dataclasses.asdict(s) for s in sets], "seconds": time.perf_counter() - t_all,
            "python": platform.python_version()}
    result = {"meta": meta, "rows": rows, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md = render(result)
    Path(args.md or out.with_suffix(".md")).write_text(md + "\n")
    print("\n" + md)
    print(f"wrote {out} and {args.md or out.with_suffix('.md')} ({meta['seconds'] / 60:.1f} min)")
    return 0


def hindsight(args, base, code: str) -> int:
    """Every non-empty subset of one set's blocks, fitted without selection, against the default on all blocks."""
    import itertools

    from panel_sets import CACHE, load_set
    from regressors.metrics import main_score

    (ps,) = select_sets(args.hindsight)
    data = load_set(ps)
    cache = None if args.no_reuse else CACHE / "fits"
    names = [b for b in data.blocks if not (ps.noise and b == "noise")]
    ref = run_fit(ps, data, base, cache, code)
    off = dataclasses.replace(base, select_blocks=False)
    rows = []
    for r in range(1, len(names) + 1):
        for sub in itertools.combinations(names, r):
            sp = dataclasses.replace(ps, keep=sub, noise=False)
            fit = run_fit(sp, load_set(sp), off, cache, code)
            common, ia, ib = np.intersect1d(ref["rows"], fit["rows"], return_indices=True)
            y, g = data.y[common], data.groups[common]
            lo, hi = paired_bootstrap(ref["pred"][ia], fit["pred"][ib], y, g, args.n_boot, seed=0)
            rows.append({"subset": "+".join(sub), "main": main_score(fit["pred"][ib], y),
                         "default_minus_subset": main_score(ref["pred"][ia], y) - main_score(fit["pred"][ib], y),
                         "ci": [lo, hi], "seconds": fit["seconds"]})
            print(f"{'+'.join(sub):50s} main {rows[-1]['main']:.4f}  default − subset "
                  f"{rows[-1]['default_minus_subset']:+.4f} [{lo:+.4f}, {hi:+.4f}]", flush=True)
    best = max(rows, key=lambda r: r["main"])
    main_default = main_score(ref["pred"], data.y[ref["rows"]])
    summary = {"set": ps.name, "default": main_default, "default_kept": ref["kept"], "best_subset": best["subset"],
               "best_main": best["main"], "default_minus_best": main_default - best["main"]}
    print(json.dumps(summary, indent=1))
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": _git("rev-parse", "HEAD"),
            "renderer": "panel:render_hindsight", "code_label": args.code_label, "code_hash": code, "machine": _machine(),
            "cpu_count": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join(["python", *sys.argv]), "trials": args.trials}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


def _machine() -> str:
    """OS, CPU model, memory and Python, as every benchmark's results file records them (``_results._machine``)."""
    sys.path.insert(0, str(HERE))
    import _results

    return _results._machine()


if __name__ == "__main__":
    sys.exit(main())
