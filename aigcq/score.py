"""``aigcq score MODEL INPUT... [--prompts FILE] [--generator NAME] [-o scores.csv] [--level 0.9]``.

Prints (or writes) one row per input, in input order:
``path, score, score_lo, score_hi, in_domain, domain_score, status, error``.

* ``score_lo``–``score_hi``: the prediction interval at ``--level`` (default 90%), conformal on the
  model's cross-validated errors; ``in_domain``: whether the item's features lie as close to the
  training items as held-out training items do (``domain_score`` ≤ 1); False means the score is an
  extrapolation. The model's card (MODEL.md) says what they were calibrated on.
* ``status``: ``ok``, ``no_prompt`` (scored with an empty prompt by a model that reads prompts) or
  ``failed`` (``error`` says why).

Exit status 1 when any item failed (its row names the reason), unless --allow-failures;
2 when the model, the cache or an input list cannot be used at all.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

EXIT_FAILED_ITEMS, EXIT_USAGE = 1, 2


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aigcq score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model bundle folder (runs/<run>/model) or the run folder holding it")
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="media files, folders (recursive; symlinked folders followed), lists (JSON, JSONL, CSV/TSV "
                         "with a path column and optional prompt, generator, or one path per line, taken exactly as "
                         "written: no comments, no stripping; decided by content, not extension), or - for a list "
                         "on stdin")
    ap.add_argument("--prompts", default=None,
                    help="table (csv/tsv/json/jsonl) of path -> prompt for inputs without one; paths relative to the "
                         "table's folder (a bare file name matches that name anywhere); a path given twice with "
                         "different prompts is refused")
    ap.add_argument("--generator", default=None, help="generator name for inputs without one (default: unknown)")
    ap.add_argument("-o", "--out", default=None, help="write here (.csv, .json or .jsonl); default: CSV on stdout")
    ap.add_argument("--format", choices=("csv", "json", "jsonl"), default=None,
                    help="output format (default: from -o's extension, else csv)")
    ap.add_argument("--allow-failures", action="store_true", help="exit 0 even when some items failed")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"),
                    help="override the precision the model's features were computed at (scores then differ slightly)")
    ap.add_argument("--cache", default=None,
                    help="feature cache store (default: $AIGCQ_CACHE/features-<track>.h5 or ~/.cache/aigcq/...)")
    ap.add_argument("--cache-max", default=None, metavar="SIZE",
                    help="bound of the cache's size: the least recently used rows are dropped beyond it (500M, 4G, "
                         "none; default: $AIGCQ_CACHE_MAX, else 4G)")
    ap.add_argument("--level", default=None, metavar="COVERAGE",
                    help="coverage of the prediction interval score_lo..score_hi (0.9, 90 or 90%%; a bare 1 is "
                         "refused as ambiguous: 1%% or 100%%?; default 90%%)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="decoding workers (default: 0 below 64 items, else 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads when features are computed (default: torch's; torch is not "
                         "even imported when everything comes from the cache)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="accept a legacy model.pkl, and let weights files given with --weights be unpickled where an "
                         "extractor allows it (a pickle runs code when loaded: only files you produced)")
    ap.add_argument("--weights", action="append", default=None, metavar="EXTRACTOR.OPTION=PATH",
                    help="a local weights file the model's features need, e.g. reiqa.content_ckpt=/w/content_aware_r50.pth "
                         "(repeatable): a model bundle never names a file to read; its key must match the file's content")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--quiet", action="store_true",
                    help="no progress bar, notes or summary on stderr (failed items are still listed)")
    return ap


def _plain(v):
    """JSON value of a cell: NaN/None -> null, numpy scalars -> Python."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def _write(df, out: str | None, fmt: str | None) -> None:
    """CSV/JSON/JSONL to ``out`` (atomically) or stdout. A file name that is not valid UTF-8 (os.walk gives it
    as surrogate escapes) is written back as the bytes it has on disk (CSV) or as its \\udcXX escapes (JSON):
    every row is written, and reading the CSV with errors="surrogateescape" gives the path back."""
    if fmt is None:
        fmt = {".json": "json", ".jsonl": "jsonl"}.get(Path(out).suffix.lower(), "csv") if out else "csv"
    if fmt == "csv":
        text = df.to_csv(index=False)
    else:
        records = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
        text = (json.dumps(records, indent=2) + "\n" if fmt == "json"
                else "".join(json.dumps(r) + "\n" for r in records))
    data = text.encode("utf-8", errors="surrogateescape")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{out}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(text)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from regressors.bundle import BundleError, skops_io

    # skops first: at import it looks up hundreds of scipy ufuncs by scanning every loaded module, so it
    # costs least before pandas and the rest load (measured: 0.3 s less at load 18 on 2 cores)
    skops_io()
    from extractors.bundle_options import parse_weights
    from regressors.conformal import parse_level

    from .inputs import InputError, attach_prompts, collect, read_prompt_table
    from .predictor import Predictor
    from .score_cache import CacheError, parse_size

    try:
        weights = parse_weights(args.weights)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        level = parse_level(args.level) if args.level is not None else None
        cache_max = parse_size(args.cache_max) if args.cache_max is not None else None
        with warnings.catch_warnings(record=True) as load_warnings:  # shown once, as our own line
            warnings.simplefilter("default")
            predictor = Predictor.load(args.model, trust_pickle=args.trust_pickle, cache=args.cache,
                                       cache_max=cache_max, device=args.device, precision=args.precision,
                                       batch_size=args.batch_size, workers=args.workers, threads=args.threads,
                                       progress=not (args.no_progress or args.quiet), level=level,
                                       weights=weights)
        for w in load_warnings:
            print(f"warning: {w.message}", file=sys.stderr)
        items, notes = collect(args.inputs)
        attach_prompts(items, read_prompt_table(args.prompts) if args.prompts else None, args.generator)
    except (BundleError, InputError, CacheError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not items:
        print("error: no inputs to score" + ("".join(f"\n  {n}" for n in notes)), file=sys.stderr)
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():  # the no_prompt warning is printed below with the other notes
            warnings.simplefilter("ignore", UserWarning)
            df = predictor.score(items)
    except (BundleError, CacheError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    _write(df, args.out, args.format)
    failed = df[df["status"] == "failed"]
    if not args.quiet:
        for n in notes + predictor.notes:
            kind = "warning" if "status no_prompt" in n else "note"
            print(f"{kind}: {n}", file=sys.stderr)
        t = predictor.timings
        computed = sum(predictor.computed.values())
        print(f"scored {len(df) - len(failed)} of {len(df)} item(s) with {predictor.path} "
              f"({predictor.target}, {predictor.track} track); features computed for {computed} item-block(s), "
              f"the rest from the cache {predictor.cache}", file=sys.stderr)
        print("time: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in t.items()), file=sys.stderr)
        outside = int((df["in_domain"] == False).sum())  # noqa: E712 (None: not judged)
        if outside:
            print(f"warning: {outside} item(s) out of the model's domain (in_domain False): their features lie "
                  "farther from the training items than held-out training items do; treat those scores as "
                  "extrapolations", file=sys.stderr)
        if args.out:
            print(f"wrote {args.out}", file=sys.stderr)
    for r in failed.itertuples():  # errors, not summary: listed under --quiet too (the line below says so)
        print(f"failed: {r.path}: {r.error}", file=sys.stderr)
    if len(failed) and not args.allow_failures:
        print(f"error: {len(failed)} of {len(df)} item(s) failed (listed above; --allow-failures to exit 0)",
              file=sys.stderr)
        return EXIT_FAILED_ITEMS
    return 0
