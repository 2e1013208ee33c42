"""``make demo``: the whole pipeline offline, in a few minutes, on an embedded dataset.

1. build a small image dataset from scikit-image's sample photos with graded synthetic
   degradations and SYNTHETIC ratings (:mod:`experiments.demo_data`);
2. extract the offline features (nss, effnet_lite0, prompt_minilm, generator) into an
   HDF5 store with ``python -m extractors run``;
3. tune, cross-validate (grouped by source photo) and fit with ``python -m regressors fit``;
4. a quick ablation (every extractor alone / all minus each), unless ``--no-ablation``;
5. ``aigcq score`` with the model bundle on images of photos held out of the dataset (never in
   the store, the CV or the fit), printed next to their synthetic labels with their 90% intervals
   and ``in_domain``; and on three foreign images (a text page, flat grey, noise), which
   ``in_domain`` should flag.

The steps run the same command lines a user types (``make features`` / ``make regress``),
so the demo checks the real entry points. Rerunning reuses the dataset and the store.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .demo_data import DemoConfig, build_demo_dataset, write_foreign_images

EXTRACTORS = ("nss", "effnet_lite0", "prompt_minilm", "generator")
BANNER = (
    "> **SYNTHETIC LABELS.** This run used the embedded demo dataset: scikit-image sample photos with\n"
    "> synthetic degradations and a computed 'MOS' (see data/README.txt). The scores show that the\n"
    "> pipeline works; they say nothing about human ratings of AI-generated images.\n\n"
)


def _run(cmd: list[str], what: str) -> float:
    print(f"\n== {what}\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo: {what} failed (exit {proc.returncode}); command: {shlex.join(cmd)}")
    return time.perf_counter() - t0


def _headline(metrics: dict) -> str:
    """One line from metrics.json, whatever nesting the regressors chose."""
    def find(d, depth=0):
        if isinstance(d, dict):
            if "main" in d and "srcc" in d and isinstance(d["main"], (int, float)):
                return d
            for k in ("cv", "cross_validation", "stack", "oof", "overall"):
                if k in d and (hit := find(d[k], depth + 1)):
                    return hit
            if depth < 3:
                for v in d.values():
                    if hit := find(v, depth + 1):
                        return hit
        return None

    m = find(metrics)
    if not m:
        return "(metrics.json has no main/srcc entry)"
    ci = m.get("ci", {})

    def part(k):
        lo_hi = ci.get(k)
        return f"{k.upper() if k != 'main' else 'main'} {m[k]:.3f}" + (f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")

    return ", ".join(part(k) for k in ("srcc", "plcc", "main") if k in m)


def _heldout_table(listing: Path, scores_csv: Path) -> str:
    """Held-out images: model score (with its interval and in_domain) next to the synthetic label, their rank
    agreement and how many of the labels fall in their intervals; then the foreign images (rows after the list's)."""
    import pandas as pd
    from scipy.stats import spearmanr

    lab = pd.read_csv(listing)
    sc = pd.read_csv(scores_csv, keep_default_na=False, na_values=[""])
    held, foreign = sc.iloc[:len(lab)].reset_index(drop=True), sc.iloc[len(lab):]
    df = pd.DataFrame({"image": lab["path"].map(lambda p: Path(p).stem), "generator": lab["generator"],
                       "synthetic label": lab["mos"].round(2), "score": held["score"].round(2),
                       "interval": [f"{a:.2f}–{b:.2f}" for a, b in zip(held["score_lo"], held["score_hi"])],
                       "in_domain": held["in_domain"], "status": held["status"]})
    ok = df["status"] == "ok"
    rho = spearmanr(df.loc[ok, "score"], df.loc[ok, "synthetic label"]).statistic if ok.sum() > 2 else float("nan")
    inside = int(((lab["mos"] >= held["score_lo"]) & (lab["mos"] <= held["score_hi"]))[ok].sum())
    lines = [f"\nHeld-out images (their photos were never in the store, the CV or the fit); "
             f"SRCC with the synthetic labels {rho:.3f} on {int(ok.sum())} images; {inside} of {int(ok.sum())} labels "
             f"inside their 90% interval; in_domain True for {int((held['in_domain'] == True).sum())}:", ""]  # noqa: E712
    lines.append(df.sort_values("synthetic label", ascending=False).to_string(index=False))
    if len(foreign):
        f = pd.DataFrame({"image": foreign["path"].map(lambda p: Path(p).stem), "score": foreign["score"].round(2),
                          "interval": [f"{a:.2f}–{b:.2f}" for a, b in zip(foreign["score_lo"], foreign["score_hi"])],
                          "in_domain": foreign["in_domain"], "domain_score": foreign["domain_score"].round(2)})
        lines += ["", "Foreign images (not photos; in_domain False means: the score is an extrapolation):", "",
                  f.to_string(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo", help="run folder (data/, demo.h5, regress/, ablation/)")
    ap.add_argument("--n-sources", type=int, default=DemoConfig.n_sources, help="source photos (CV groups), max 16")
    ap.add_argument("--size", type=int, default=DemoConfig.size, help="image side in pixels")
    ap.add_argument("--trials", type=int, default=8, help="Optuna trials per head")
    ap.add_argument("--heads", default="svr,enet", help="tuned heads (LightGBM left out by default: it tunes slowly)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--heldout-sources", type=int, default=2,
                    help="photos held out of the dataset, whose images `aigcq score` rates at the end (0: none)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    out = Path(args.out)
    from regressors.rundir import RunFolderError, claim_folder, foreign_entries, record_files

    try:  # new, empty or an earlier demo's folder (marked): never a folder aigcq did not make
        claim_folder(out, "demo")
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    not_ours = set(foreign_entries(out))  # files someone put here since the last demo stay theirs
    py = sys.executable
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_demo_dataset(out / "data", DemoConfig(n_sources=args.n_sources, size=args.size,
                                                       heldout_sources=args.heldout_sources))
    timings["dataset"] = time.perf_counter() - t0
    store = out / "demo.h5"
    exs = ",".join(EXTRACTORS)
    timings["features"] = _run(
        [py, "-m", "extractors", "run", "--track", "image", "--data", str(data), "--extractors", exs,
         "--store", str(store), "--device", "cpu", "--workers", str(args.workers), "--batch-size", "16"],
        "features")
    reg = out / "regress"
    timings["regress"] = _run(
        [py, "-m", "regressors", "fit", "--track", "image", "--store", str(store), "--extractors", exs,
         "--target", "mos", "--out", str(reg), "--protocol", "grouped", "--trials", str(args.trials),
         "--heads", args.heads],
        "regress (grouped CV by source photo)")
    report = reg / "report.md"
    if report.is_file() and not report.read_text().startswith(BANNER[:20]):
        report.write_text(BANNER + report.read_text())
    if not args.no_ablation:
        from .ablate import markdown_table, run_ablation

        print("\n== ablation (every extractor alone, all minus each; same folds)", flush=True)
        t0 = time.perf_counter()
        res = run_ablation(store, list(EXTRACTORS), target="mos", head="svr", trials=4, folds=5, seed=0,
                           protocol="grouped", n_boot=500, out=out / "ablation", track="image")
        timings["ablation"] = time.perf_counter() - t0
        print(markdown_table(res.table))
    heldout = data.parent / "heldout" / "list.csv"
    scores_csv = out / "heldout_scores.csv"
    if args.heldout_sources:
        foreign = write_foreign_images(data.parent / "foreign", size=args.size)
        timings["score"] = _run(
            [py, "-m", "aigcq", "score", str(reg / "model"), str(heldout), *map(str, foreign), "-o", str(scores_csv),
             "--cache", str(out / "score-cache.h5")],
            "score images held out of the dataset, and three foreign ones, with the model bundle (aigcq score)")
        print(_heldout_table(heldout, scores_csv))
    record_files(out, [out / f for f in foreign_entries(out) if f not in not_ours], job="demo")
    total = time.perf_counter() - t_start
    metrics_path = reg / "metrics.json"
    headline = _headline(json.loads(metrics_path.read_text())) if metrics_path.is_file() else "(no metrics.json)"
    print("\n" + "=" * 72)
    print("DEMO DONE — labels are SYNTHETIC (degraded skimage sample photos), not human ratings.")
    print(f"  cross-validated (grouped by source photo): {headline}")
    print(f"  metrics:  {metrics_path}")
    print(f"  scatter:  {reg / 'scatter.png'}")
    print(f"  report:   {report}")
    if not args.no_ablation:
        print(f"  ablation: {out / 'ablation' / 'ablation.md'} and ablation.png")
    print(f"  model:    {reg / 'model'} (card: MODEL.md); score new media with:")
    print(f"            aigcq score {reg / 'model'} <images or folders> [--prompts prompts.csv]")
    if args.heldout_sources:
        print(f"  held-out scores: {scores_csv}")
    print("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    from features_store.console import run_main

    sys.exit(run_main(main))
