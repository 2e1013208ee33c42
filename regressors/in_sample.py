"""Which items of a store the model was trained on, by item id and content, wherever the data lives.

A copy of the training data in another folder (or under another dataset name) is still the
training data: ``aigcq predict`` on it would report an in-sample score (main 0.901 against the
honest 0.693 on one model) and write a submission. The bundle records one key per training item:
its media's sha256 where the store recorded one (``features_store.fingerprint``), else its item
id with its prompt and generator (a label-only store has no media to hash: what a model reads of
such an item is its prompt and generator). Keys are the first 8 bytes of the SHA-256 of that text,
sorted and base64-encoded in bundle.json (about 11 characters an item).
"""
from __future__ import annotations

import base64
import hashlib
import os

import numpy as np

#: share of a split's items found among the training items from which predict refuses it as in-sample
REFUSE_FROM = 0.5


def _keys(store, ids) -> np.ndarray:
    """Sorted uint64 keys of items ``ids`` of ``store`` (content hash where recorded, else item id)."""
    from features_store import FeatureStore
    from features_store.fingerprint import fingerprints

    with FeatureStore(os.fspath(store), mode="r") as st:
        ids = [str(i) for i in ids]
        rows = st.index_of(ids) if len(ids) else np.zeros(0, np.int64)
        sha = fingerprints(st)["sha256"][rows] if len(ids) else []
        df = st.columns(["item_id", "prompt", "generator"]).iloc[rows]
    texts = [f"sha256:{h}" if h else f"id:{i}\0prompt:{p}\0generator:{g}"
             for i, h, p, g in zip(ids, sha, df["prompt"].astype(str), df["generator"].astype(str))]
    return np.sort(np.array([int.from_bytes(hashlib.sha256(t.encode("utf-8", "surrogateescape")).digest()[:8], "big")
                             for t in texts], dtype=np.uint64))


def training_items(store, ids) -> dict:
    """What bundle.json records of the training items (``training.item_keys``)."""
    keys = _keys(store, ids)
    return {"n": int(len(keys)), "key": "sha256 of the media where recorded, else the item id, prompt and "
                                       "generator; first 8 bytes of its sha256, sorted, base64",
            "keys": base64.b64encode(keys.astype(">u8").tobytes()).decode("ascii")}


def overlap(info: dict, store, ids) -> int | None:
    """How many of items ``ids`` of ``store`` are training items of the model (None: the bundle records none)."""
    rec = (info.get("training") or {}).get("item_keys")
    if not isinstance(rec, dict) or not isinstance(rec.get("keys"), str):
        return None
    train = np.frombuffer(base64.b64decode(rec["keys"]), dtype=">u8").astype(np.uint64)
    return int(np.isin(_keys(store, ids), train).sum())
