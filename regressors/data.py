"""Reading a track's features from the store (only through features_store's API)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import h5py
import numpy as np

#: store attributes (on /features/<key>) that may record extraction time, in seconds per item
RUNTIME_ATTRS = ("seconds_per_item", "runtime_per_item", "sec_per_item")


@dataclass
class TrackData:
    X: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray
    groups: np.ndarray
    generators: np.ndarray
    names: np.ndarray  # the challenge's file names (``name`` column) where the store has them
    blocks: dict[str, list[int]]
    keys: dict[str, str]  # block name -> store key
    split: str | None
    runtime: dict[str, float] = field(default_factory=dict)  # key -> seconds per item, where recorded
    devices: dict[str, str] = field(default_factory=dict)  # key -> device the extraction ran on, where recorded


def store_keys_by_name(store_path) -> dict[str, list[str]]:
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        out: dict[str, list[str]] = {}
        for k in st.keys():
            out.setdefault(st.config(k)["name"], []).append(k)
        return out


def _runtime_attrs(store_path, keys) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds per item and device recorded by the extraction runs, where the store has them (best effort)."""
    runtime, devices = {}, {}
    try:
        with h5py.File(store_path, "r") as f:
            for k in keys:
                attrs = f[f"features/{k}"].attrs if f"features/{k}" in f else {}
                for a in RUNTIME_ATTRS:
                    if a in attrs:
                        runtime[k] = float(attrs[a])
                        break
                if "device" in attrs:
                    devices[k] = str(attrs["device"])
    except (OSError, KeyError):
        pass
    return runtime, devices


def splits_of(store_path, target: str = "mos") -> dict[str, bool]:
    """{split: labelled?}; labelled means every item of that split has a finite target."""
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        df = st.df
        out = {}
        for s in df["split"].dropna().unique():
            col = df.loc[df["split"] == s, target] if target in df else None
            out[str(s)] = bool(col is not None and np.isfinite(col.to_numpy(dtype=float)).all())
        return out


def load_track(store_path, extractors, split: str | None = "train", target: str | None = "mos") -> TrackData:
    """X (blocks side by side, in the order given), y, ids, groups, generators and the block map."""
    from features_store import FeatureStore, load_features, resolve_keys

    with FeatureStore(os.fspath(store_path), mode="r") as st:
        keys = resolve_keys(st, extractors if extractors else st.keys())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            X, y, ids, groups = load_features(st, keys, split=split, target=target)
        for w in caught:
            print(f"warning: {w.message}")
        names = [st.config(k)["name"] for k in keys]
        block_names = [n if names.count(n) == 1 else k for n, k in zip(names, keys)]
        dims = {b: st.config(k)["dim"] for b, k in zip(block_names, keys)}
        start, blocks = 0, {}
        for b in block_names:
            blocks[b] = [start, start + int(dims[b])]
            start += int(dims[b])
        if start != X.shape[1]:
            raise RuntimeError(f"store dims {dims} do not add up to the {X.shape[1]} columns read")
        df = st.df.set_index("item_id")
        gens = df.loc[list(ids), "generator"].to_numpy(dtype=object) if "generator" in df else np.full(len(ids), None)
        fnames = df.loc[list(ids), "name"].to_numpy(dtype=object) if "name" in df else np.asarray(ids, dtype=object)
    runtime, devices = _runtime_attrs(store_path, keys)
    return TrackData(X=np.asarray(X, dtype=np.float64), y=None if y is None else np.asarray(y, float), ids=ids,
                     groups=groups, generators=gens, names=fnames, blocks=blocks,
                     keys=dict(zip(block_names, keys)), split=split, runtime=runtime, devices=devices)
