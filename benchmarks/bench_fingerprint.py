"""Cost of the media fingerprint check on a cached rerun (features_store.fingerprint).

    python benchmarks/bench_fingerprint.py [--items 20000]

Builds N small files and a store whose one image key is done for all of them, then times,
in this one process: opening the store and finding nothing pending (what a cached rerun
did before), the fingerprint check on an unchanged dataset (stats only: what it adds now),
and the first check on a store without a record (every file hashed once). Then the read-only
check `aigcq regress` / `aigcq predict` run before using the features (regressors.data.check_media_unchanged:
open the store, stat every item against the record, no hashing), beside reading the features they load
anyway (regressors.data.load_track). Prints the load average beside the numbers: on a shared machine
compare the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import _results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--bytes", type=int, default=40_000, help="size of each file")
    args = ap.parse_args()
    from features_store import FeatureStore
    from features_store.fingerprint import check_media
    from features_store.manifest import Manifest
    from regressors.data import check_media_unchanged, load_track

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        media = tmp / "media"
        media.mkdir()
        rng = np.random.default_rng(0)
        blob = rng.bytes(args.bytes)
        names = [f"img{i:06d}.png" for i in range(args.items)]
        for i, n in enumerate(names):
            (media / n).write_bytes(blob[:-8] + i.to_bytes(8, "little"))
        m = Manifest(pd.DataFrame({"item_id": names, "path": names, "prompt": names}), media, "bench")
        store = tmp / "s.h5"
        key = "fake-000000000000"
        with FeatureStore(store) as st:
            st.set_manifest(m)
            st.ensure_config(key, {"name": "fake"}, kind="image")
            st.write(key, np.arange(args.items), np.ones((args.items, 16), np.float32))
        paths = [str(media / n) for n in names]
        rows = np.arange(args.items)

        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def open_pending():
            with FeatureStore(store) as st:
                st.index_of(names)
                st.pending(key)

        def first():
            with FeatureStore(store) as st:
                check_media(st, paths, st.index_of(names))

        def cached():
            with FeatureStore(store) as st:
                check_media(st, paths, rows)

        def regress_check():
            assert check_media_unchanged(store, [key], None, "image") == args.items

        def regress_read():
            load_track(store, [key], split=None, target=None)

        t_first = timed(first)
        t_open = min(timed(open_pending) for _ in range(3))
        t_check = min(timed(cached) for _ in range(3))
        t_read = min(timed(regress_read) for _ in range(3))
        t_regress = min(timed(regress_check) for _ in range(3))
    print(f"{args.items} items, load average {os.getloadavg()[0]:.2f}")
    print(f"  open store + pending (cached rerun before):       {t_open:.3f} s")
    print(f"  open store + fingerprint check (unchanged media): {t_check:.3f} s  ({t_check / t_open:.2f}x)")
    print(f"  first check, every file hashed ({args.bytes // 1000} kB each):  {t_first:.3f} s")
    print(f"  regress/predict: reading the features (load_track):  {t_read:.3f} s")
    print(f"  regress/predict: + media check (open store, stat):   {t_regress:.3f} s  ({t_regress / t_read:.2f}x the read)")
    _results.write("fingerprint", [
        {"step": "open store + pending (a cached rerun without the check)", "seconds": round(t_open, 3)},
        {"step": "open store + fingerprint check, unchanged media (stat only)", "seconds": round(t_check, 3)},
        {"step": f"first check, every file hashed ({args.bytes // 1000} kB each)", "seconds": round(t_first, 3)},
        {"step": "regress/predict: reading the features (load_track)", "seconds": round(t_read, 3)},
        {"step": "regress/predict: media check (open store, stat every item)", "seconds": round(t_regress, 3)},
    ], {"items": args.items, "check / open alone": round(t_check / t_open, 2),
        "media check / feature read": round(t_regress / t_read, 2), "best of": 3})


if __name__ == "__main__":
    main()
