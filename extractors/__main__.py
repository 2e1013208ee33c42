"""``python -m extractors list`` / ``python -m extractors run ...``.

    python -m extractors run --track image --data ../shared/data/aigiqa20k \\
        --extractors generator,prompt_minilm --store stores/aigiqa20k.h5
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def split_specs(text: str) -> list[str]:
    """'a,b:opt=[1, 2],c' -> ['a', 'b:opt=[1, 2]', 'c'] (commas inside brackets kept)."""
    out, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _list(args) -> int:
    from .registry import REGISTRY
    from .runner import load_plugins

    load_plugins(args.plugins)
    rows = [("name", "kind", "output", "needs")] + [(n, e.kind, e.dim, e.needs) for n, e in sorted(REGISTRY.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0


def _default_store(manifest, track: str) -> Path:
    """The dataset-identifying default (features_store.naming), as every entry point uses."""
    from features_store.naming import find_default_store

    path, note = find_default_store(manifest, track)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return path


def _run(args) -> int:
    from .cpu_runtime import parse_threads, set_malloc_thresholds, trim

    # first, before torch or numpy allocate much: every later buffer follows these thresholds
    set_malloc_thresholds(args.malloc_threshold)
    threads = parse_threads(args.threads)  # torch is set (and loaded) only if something is computed
    from features_store.adapters import dataset_from_args
    from features_store.manifest import ManifestError, problems_frame
    from features_store.store import FeatureStore

    from .registry import for_track
    from .runner import MEDIA_KINDS, load_plugins, parse_shard, run_extraction, shard_path

    load_plugins(args.plugins)
    specs = split_specs(args.extractors)
    if not specs:
        raise ValueError("--extractors is empty")
    extractors = [for_track(s, args.track) for s in specs]  # unknown names fail before any work
    manifest = dataset_from_args(args)
    shard = parse_shard(args.shard)
    if args.engine == "ray":
        if shard is not None:
            raise ValueError("--shard is for hand-run shards; --engine ray makes its own (see --shard-size)")
        from .ray_engine import import_ray

        import_ray()  # without ray: one line saying how to install it, before any work
    store = Path(args.store) if args.store else _default_store(manifest, args.track)
    if shard is not None and not args.store_is_shard:
        store = shard_path(store, shard)
    store.parent.mkdir(parents=True, exist_ok=True)

    wants_generator = any(e.name == "generator" for e in extractors)
    for note in manifest.notes:  # a guessed target, items without a generator ...: said before any work
        if getattr(note, "about", "") != "generator" or wants_generator:
            print(f"warning: {note}", file=sys.stderr)
    # structural problems (ids, labels, prompts, paths) concern every extractor
    manifest, problems = manifest.validate(args.on_invalid, check_media=False)
    if args.split is not None:
        wanted = manifest.df["split"] == args.split
    else:
        wanted = manifest.df["split"].notna()
    media = [e for e in extractors if e.kind in MEDIA_KINDS]
    if media:  # videos on the image track (or the reverse) are refused before any work
        from .kindcheck import check_media_kind

        for note in check_media_kind(manifest, args.track, allow=args.allow_media_mismatch):
            print(f"warning: {note}", file=sys.stderr)
        sub = manifest.subset(wanted.to_numpy())
        missing = [p for p in sub.problems(check_media=True) if "media" in p.reason]
        if missing and args.on_invalid == "stop":
            raise ManifestError(manifest.name, missing)
        problems += missing  # with skip: the runner records them as failed items of the media extractors
    if problems:
        report = Path(f"{store}.invalid.csv")
        problems_frame(problems).to_csv(report, index=False)
        print(f"{len(problems)} invalid item(s) skipped or to fail (all listed in {report}):", file=sys.stderr)
        for p in problems[:10]:
            print(f"  - {p}", file=sys.stderr)

    if args.engine == "ray":
        return _run_ray(args, manifest, specs, store)
    summaries = []
    with FeatureStore(store, mode="a", dtype=args.dtype) as st:
        for ex in extractors:
            s = run_extraction(
                manifest, ex, st, device=args.device, precision=args.precision, batch_size=args.batch_size,
                workers=args.workers, shard=shard, split=args.split, retry_failed=not args.no_retry_failed,
                progress=not args.no_progress, checkpoint_every_s=args.checkpoint_every,
                on_changed=args.on_changed, allow_batch_change=args.allow_batch_change, threads=threads,
                worker_stall_s=args.worker_stall, allow_media_mismatch=args.allow_media_mismatch,
            )
            trim()  # what the allocator thresholds kept for this extractor goes back before the next
            summaries.append(s)
            print(s.line())
            for iid, msg in s.failures[:20]:
                print(f"  failed {iid}: {msg}")
            if len(s.failures) > 20:
                print(f"  ... {len(s.failures) - 20} more: python -m features_store errors {store} {s.key}")
    print(f"store: {store} ({len(manifest)} items)")
    return 0


def _run_ray(args, manifest, specs, store) -> int:
    from .cpu_runtime import parse_threads
    from .ray_engine import run_ray

    summaries = run_ray(manifest, specs, args.track, store, address=args.address, shard_size=args.shard_size,
                        actors_per_gpu=args.actors_per_gpu, actors=args.actors, max_restarts=args.max_restarts,
                        device=args.device, precision=args.precision, batch_size=args.batch_size,
                        workers=args.workers, split=args.split, retry_failed=not args.no_retry_failed,
                        progress=not args.no_progress, checkpoint_every_s=args.checkpoint_every, dtype=args.dtype,
                        plugins=args.plugins, threads=parse_threads(args.threads),
                        run_options=dict(on_changed=args.on_changed, allow_batch_change=args.allow_batch_change,
                                         worker_stall_s=args.worker_stall,
                                         allow_media_mismatch=args.allow_media_mismatch))
    for s in summaries:
        rate = f", {s['done'] / s['seconds']:.1f} items/s per worker" if s["seconds"] > 0 and s["done"] else ""
        print(f"{s['key']}: {s['done']} computed, {s['failed']} failed, {s['skipped']} already in the store, "
              f"dim {s['dim']}, {s['shards']} shards on {len(s['pids'])} worker process(es){rate}"
              + (f", {s['requeued']} requeued after a lost worker" if s["requeued"] else ""))
        for iid, msg in s["failures"][:20]:
            print(f"  failed {iid}: {msg}")
        if s["failed"] > 20:
            print(f"  ... more: python -m features_store errors {store} {s['key']}")
    print(f"store: {store} ({len(manifest)} items)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m extractors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="extractor names, kind, output size, needs")
    p.add_argument("--plugins", default=None, help="modules to import that register extra extractors")
    p.set_defaults(func=_list)

    from features_store.cliargs import add_dataset_arguments

    p = sub.add_parser("run", help="extract features into the store")
    p.add_argument("--track", required=True, choices=["image", "video"])
    add_dataset_arguments(p)
    p.add_argument("--extractors", required=True, help="comma list of specs: name or name:opt=value:opt=value")
    p.add_argument("--store", default=None, help="HDF5 store (default: stores/<dataset name>-<track>-<dataset id>.h5)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--dtype", default=None, choices=["float32", "float16"],
                   help="storage dtype of a new store (default float32; an existing store keeps its own)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="items per forward pass (a key resumed with rows keeps the batch size it records)")
    p.add_argument("--allow-batch-change", action="store_true",
                   help="resume a key with another --batch-size than it records (numbers differ ~1e-5; both recorded)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for image/video extractors (default min(4, CPUs); meta/text use 0)")
    p.add_argument("--worker-stall", type=float, default=None, metavar="S",
                   help="stop when the DataLoader workers hand over no batch for S seconds while using no CPU "
                        "(stuck, e.g. /dev/shm too small; default 120, or AIGCQ_WORKER_STALL_S; 0: wait forever)")
    p.add_argument("--allow-media-mismatch", action="store_true",
                   help="read media of the other kind anyway: frame 0 of a video on the image track, an image "
                        "as a 1-frame video on the video track (refused by default)")
    p.add_argument("--shard", default=None, help="k/N: compute every N-th item from k (k from 0) into its own file")
    p.add_argument("--store-is-shard", action="store_true", help="with --shard: write to --store as given")
    p.add_argument("--split", default=None, help="only this split (default: all)")
    p.add_argument("--threads", default=None,
                   help="torch CPU threads, or auto (default): the CPUs this process may use (affinity, cgroup "
                        "quota) minus those busy with other work, re-checked every few seconds; intra-op threads "
                        "that wait for each other at every barrier run many times slower when cores are busy")
    p.add_argument("--malloc-threshold", default=None,
                   help="glibc M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (default 1G, or $AIGCQ_MALLOC_THRESHOLD): "
                        "keeps large activation buffers in the heap instead of unmapping them every layer; "
                        "off: glibc's defaults")
    p.add_argument("--on-invalid", default="stop", choices=["stop", "skip"])
    p.add_argument("--no-retry-failed", action="store_true", help="leave items that failed before alone")
    p.add_argument("--on-changed", default="recompute", choices=["recompute", "refuse"],
                   help="items whose media changed (size/mtime, then sha256) since their features were computed: "
                        "recompute them (default, with a warning naming them) or refuse the run")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plugins", default=None, help="modules to import that register extra extractors (or AIGCQ_PLUGINS)")
    g = p.add_argument_group("Ray engine (pip install 'aigc-quality[ray]'; docs/scale.md)")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="ray: shards of items computed by Ray actors (one GPU each with --device cuda); their rows "
                        "come back to this process, which alone writes --store (docs/scale.md)")
    g.add_argument("--address", default=None,
                   help="Ray cluster: auto (the one `ray start` made on this node), head:6379, or ray://head:10001 "
                        "(Ray Client: pip install 'ray[client]'); default: a local one")
    g.add_argument("--shard-size", type=int, default=None,
                   help="items per shard (rounded up to whole batches; default ~4 shards per actor and extractor, "
                        "at most 2,048)")
    g.add_argument("--actors-per-gpu", type=int, default=1, help="shard workers sharing one GPU")
    g.add_argument("--actors", type=int, default=None,
                   help="shard workers, at most what the nodes hold (default: all they hold: per node, its GPUs x "
                        "--actors-per-gpu, or its CPUs / max(1, --workers))")
    g.add_argument("--max-restarts", "--max-retries", type=int, default=3,
                   help="times a shard goes back to the queue after its worker (process or node) was lost")
    p.set_defaults(func=_run)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; computed rows are kept (journal), rerun to continue", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        if os.environ.get("AIGCQ_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from features_store.console import run_main

    sys.exit(run_main(main))
