"""Combine shard stores (``--shard k/N`` runs) into one store.

Every item must be computed by exactly one shard: an item done in two shards with
different values is refused, and so is a key whose identity differs between shards
or a mix of storage dtypes. Missing shards are refused unless ``allow_partial``, and so are
stores of different datasets (their recorded ``dataset_id``, see features_store.naming).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .store import DONE, FAILED, FeatureStore, StoreError

_CHUNK = 4096


def merge(out: str | os.PathLike, shards: Sequence[str | os.PathLike], allow_partial: bool = False) -> dict:
    if not shards:
        raise ValueError("no shard files given")
    srcs = [FeatureStore(s, mode="r") for s in shards]
    try:
        _check_same_dataset(srcs, out)
        dtypes = {str(s.dtype) for s in srcs}
        if len(dtypes) > 1:
            raise StoreError(f"shards store different dtypes {sorted(dtypes)}; refusing to mix them")
        _check_shard_set(srcs, allow_partial)
        report = {"out": str(out), "shards": len(srcs), "keys": {}}
        with FeatureStore(out, mode="a", dtype=dtypes.pop()) as dst:
            from .fingerprint import carry

            for s in srcs:
                dst.set_manifest(s.manifest())  # compares the shard's rows only (FeatureStore.manifest_changes)
                carry(dst, s, dst.index_of(s.df["item_id"]))
            names = {key: _real_names([dst, *srcs], key) for key in {k for s in srcs for k in s.keys()}}
            for s in srcs:
                for key in s.keys():
                    c = s.config(key)
                    dst.ensure_config(key, c["identity"], feature_names=names[key], name=c["name"], kind=c["kind"] or "")
                    if names[key]:
                        dst.set_feature_names(key, names[key])
                    dst.set_batch_sizes(key, {*dst.batch_sizes(key), *s.batch_sizes(key)})  # every one recorded
            for key in sorted({k for s in srcs for k in s.keys()}):
                owner: dict[int, str] = {}
                for s in srcs:
                    if key not in s.keys():
                        continue
                    status = s.status(key)
                    rows = dst.index_of(s.df["item_id"])
                    done = np.flatnonzero(status == DONE)
                    dst_status = dst.status(key)
                    for a in range(0, len(done), _CHUNK):
                        src_rows = done[a:a + _CHUNK]
                        vals = s.read(key, src_rows, dtype=None)
                        d_rows = rows[src_rows]
                        already = dst_status[d_rows] == DONE
                        if already.any():
                            prev = dst.read(key, d_rows[already], dtype=None)
                            same = np.all((prev == vals[already]) | (np.isnan(prev) & np.isnan(vals[already])), axis=1)
                            if not same.all():
                                iid = s.df["item_id"].iat[int(src_rows[already][~same][0])]
                                other = owner.get(int(d_rows[already][~same][0]), str(out))
                                raise StoreError(f"{key}: item {iid!r} was computed by {s.path} and {other} with "
                                                 "different values; every item must come from one shard")
                        dst.write(key, d_rows[~already], vals[~already])
                        for r in d_rows[~already]:
                            owner[int(r)] = str(s.path)
                        dst_status[d_rows] = DONE
                    failed = np.flatnonzero(status == FAILED)
                    if len(failed):
                        errs = s.errors(key).set_index("row")["error"]
                        keep = [r for r in failed if dst_status[rows[r]] != DONE]
                        dst.fail(key, rows[keep], [errs[r] for r in keep])
                        dst_status[rows[keep]] = FAILED
                report["keys"][key] = dst.counts(key)
            dst.checkpoint()
            report["items"] = len(dst)
        return report
    finally:
        for s in srcs:
            s.close(checkpoint=False)


def _real_names(stores: list[FeatureStore], key: str) -> list[str] | None:
    """``key``'s feature names, whatever the order of ``stores``. A store killed after rows reached its
    journal but before its names reached a checkpoint reports placeholders (``nss_0 ...``): real
    names from any store win over them; two stores naming the features differently are refused."""
    found: dict[tuple[str, ...], str] = {}
    for st in stores:
        if key not in st.keys():
            continue
        c = st.config(key)
        names = st.feature_names(key)
        if c["dim"] and names != [f"{c['name'] or key}_{i}" for i in range(c["dim"])]:
            found.setdefault(tuple(names), str(st.path))
    if len(found) > 1:
        (a, pa), (b, pb) = list(found.items())[:2]
        diff = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if len(a) == len(b) else None
        what = f"feature {diff} is {a[diff]!r} in {pa}, {b[diff]!r} in {pb}" if diff is not None else \
            f"{len(a)} names in {pa}, {len(b)} in {pb}"
        raise StoreError(f"{key}: the stores name its features differently ({what}); they cannot be merged")
    return list(next(iter(found))) if found else None


def _check_shard_set(srcs: list[FeatureStore], allow_partial: bool) -> None:
    tags = [s.meta.get("shard") or "" for s in srcs]
    if not all(tags):
        return  # plain stores: merged by item id, conflicts still refused
    parsed = [tuple(int(x) for x in t.split("/")) for t in tags]
    totals = {n for _, n in parsed}
    if len(totals) != 1:
        raise StoreError(f"shards come from different splits: {sorted(set(tags))}")
    n = totals.pop()
    ks = [k for k, _ in parsed]
    dup = sorted({k for k in ks if ks.count(k) > 1})
    if dup:
        raise StoreError(f"shard(s) {dup} of {n} given twice")
    missing = sorted(set(range(n)) - set(ks))
    if missing and not allow_partial:
        raise StoreError(f"shard(s) {missing} of {n} missing; pass --allow-partial to merge what is there")


def _dataset_of(d: dict[str, str], path) -> tuple[str, str]:
    """(dataset id, what to show) of a store's recorded dataset (FeatureStore.dataset, naming.stored_dataset).
    Stores made before the id was recorded: the id of their root."""
    from .naming import dataset_id

    ident = d["dataset_id"] or dataset_id(os.path.realpath(d["root"]) if d["root"] else str(path))
    return ident, f"{d['name'] or '?'} from {d['source'] or d['root'] or '?'} (id {ident})"


def _check_same_dataset(srcs: list[FeatureStore], out) -> None:
    from .naming import stored_dataset

    first_id, first_what = _dataset_of(srcs[0].dataset(), srcs[0].path)
    for s in srcs[1:]:
        ident, what = _dataset_of(s.dataset(), s.path)
        if ident != first_id:
            raise StoreError(f"refusing to merge stores of different datasets: {srcs[0].path} holds {first_what}, "
                             f"{s.path} holds {what}")
    try:
        recorded = stored_dataset(out) if os.path.exists(out) else None
    except OSError:  # unreadable: opening it for the merge says why, in one line
        recorded = None
    if recorded and any(recorded.values()):  # a store without a manifest yet records no dataset
        ident, what = _dataset_of(recorded, out)
        if ident != first_id:
            raise StoreError(f"refusing to merge into {out}: it holds {what}, {srcs[0].path} holds {first_what}")
