"""Notebook-facing reads: features of one split as numpy arrays or a DataFrame."""
from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from .store import DONE, FeatureStore, StoreError

INCOMPLETE = ("drop", "raise", "keep")


def resolve_keys(store: FeatureStore, extractors: str | Sequence[str]) -> list[str]:
    """Store keys from keys or extractor names (a name must have exactly one configuration)."""
    if isinstance(extractors, str):
        extractors = [e for e in extractors.split(",") if e.strip()]
    keys = store.keys()
    out = []
    for e in extractors:
        e = e.strip()
        if e in keys:
            out.append(e)
            continue
        # by extractor name, by key prefix, or by the base of a wrapped extractor
        # ("effnet_lite0" finds "frames.effnet_lite0-<hash>" on the video track)
        matches = [k for k in keys if store.config(k)["name"] == e or k.rsplit("-", 1)[0] == e]
        if not matches:
            matches = [k for k in keys if k.rsplit("-", 1)[0].endswith("." + e)]
        if len(matches) == 1:
            out.append(matches[0])
        elif not matches:
            from .hints import suggest

            raise KeyError(f"{store.path} holds no features for {e!r}.{suggest(e, keys + sorted({store.config(k)['name'] for k in keys}))} "
                           f"Keys: {', '.join(keys) or '(none)'}")
        else:
            raise KeyError(f"{store.path} holds {len(matches)} configurations of {e!r}: {', '.join(matches)}. "
                           "Name one by its key.")
    if not out:
        raise ValueError("no extractors given")
    return out


def _open(store) -> tuple[FeatureStore, bool]:
    if isinstance(store, FeatureStore):
        return store, False
    return FeatureStore(os.fspath(store), mode="r"), True


#: how a dataset gets a label the store does not hold yet (docs/datasets.md)
MAP_A_LABEL = ("map it in the dataset (YAML: columns: {mos: <column>} for the main rating, label_columns: [<column>] "
               "for more; command line: -O columns.mos=<column>) and run `aigcq features` again (computed features "
               "are kept)")


def _label_column(st: FeatureStore, target: str) -> str:
    """The store's label column for ``target``: the label itself, or the one the dataset file's column of
    that name was mapped to (``mos_quality`` -> ``mos`` for ``columns: {mos: mos_quality}``)."""
    labels = json.loads(st.meta.get("labels", "[]"))
    aliases = json.loads(st.meta.get("label_aliases", "{}"))
    if target in labels or target == "mos":
        return target
    if target in aliases:
        return aliases[target]
    if target in st.df.columns:  # the column is there, but it is no label: it holds no value at all
        from .targets import TargetError

        raise TargetError(f"{st.path}: label column {target!r} has no values (all {len(st.df)} items empty or NaN): "
                          "nothing to fit")
    from .hints import suggest

    mapped = "".join(f"; the file's column {k!r} is the label {v!r}" for k, v in aliases.items())
    raise KeyError(f"{st.path}: no label {target!r}.{suggest(target, [*labels, *aliases])} Labels: {labels}{mapped}. "
                   f"To fit another column of the dataset's file, {MAP_A_LABEL}")


def resolve_target(store, target: str) -> tuple[str, str]:
    """(the store's label column for ``target``, a note when the name given was the file's name for it).

    For command lines: a ``--target`` the store does not know is a KeyError that says how to add it."""
    st, own = _open(store)
    try:
        column = _label_column(st, target)
    finally:
        if own:
            st.close(checkpoint=False)
    note = (f"target {target!r} is the dataset file's column mapped to {column!r}: fitting {column!r}"
            if column != target else "")
    return column, note


def _select(st: FeatureStore, keys: list[str], split: str | None, target: str | None, incomplete: str):
    if incomplete not in INCOMPLETE:
        raise ValueError(f"incomplete must be one of {INCOMPLETE}, got {incomplete!r}")
    labels = json.loads(st.meta.get("labels", "[]"))
    if target is not None:
        target = _label_column(st, target)
    df = st.columns(["item_id", "split", "group", *([target] if target else [])])
    rows = np.arange(len(df)) if split is None else np.flatnonzero((df["split"] == split).to_numpy())
    if split is not None and not len(rows):
        raise ValueError(f"{st.path}: no items in split {split!r}; splits: {sorted(df['split'].unique())}")
    complete = np.ones(len(rows), dtype=bool)
    for k in keys:
        ok = st.status(k)[rows] == DONE
        if (~ok).any() and incomplete != "keep":
            missing = df["item_id"].to_numpy()[rows[~ok]]
            msg = (f"{k}: {len(missing)} of {len(rows)} items are not done (failed or pending), e.g. "
                   f"{', '.join(map(str, missing[:3]))}; see `python -m features_store errors {st.path} {k}`")
            if incomplete == "raise":
                raise StoreError(msg)
            warnings.warn(msg + " — these rows are dropped", stacklevel=3)
        complete &= ok
    if incomplete != "keep":
        rows = rows[complete]
    y = None
    if target is not None:
        y = df[target].to_numpy(dtype=float)[rows]
        labelled = ~np.isnan(y)
        if not labelled.any():
            others = [c for c in labels if c != target]
            fix = (f"its {target!r} values lie in other splits (Python: target=None reads features without "
                   "labels)" if target in labels else
                   f"fit one of the store's labels {others} instead (command line: --target <label>)" if others
                   else f"the dataset maps no rating column: {MAP_A_LABEL}")
            raise ValueError(f"{st.path}: no item of split {split!r} has a {target!r} label; {fix}")
        if not labelled.all():
            warnings.warn(f"{(~labelled).sum()} items without {target!r} dropped", stacklevel=3)
            rows, y = rows[labelled], y[labelled]
    return rows, y, df


def load_features(store, extractors, split: str | None = "train", target: str | None = "mos",
                  incomplete: str = "drop", dtype=np.float32):
    """``X, y, ids, groups`` for one split: features of the given extractors side by side.

    ``extractors``: store keys, or names with exactly one configuration in the store.
    Items that any extractor has not done are dropped with a warning (``incomplete="raise"``
    refuses, ``"keep"`` keeps them as NaN). ``target=None`` gives ``y=None``.
    """
    st, own = _open(store)
    try:
        keys = resolve_keys(st, extractors)
        rows, y, df = _select(st, keys, split, target, incomplete)
        full = len(rows) == len(st) and np.array_equal(rows, np.arange(len(st)))
        blocks = [st.read(k, None if full else rows, dtype=dtype) for k in keys]
        X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        ids = df["item_id"].to_numpy(dtype=object)[rows]
        groups = df["group"].to_numpy(dtype=object)[rows]
        return X, y, ids, groups
    finally:
        if own:
            st.close(checkpoint=False)


def load_frame(store, extractors, split: str | None = "train", target: str | None = "mos",
               incomplete: str = "drop") -> pd.DataFrame:
    """Like :func:`load_features`, as one DataFrame: item columns, the target, then features
    (named by the extractor's feature names; prefixed by the key where two collide)."""
    st, own = _open(store)
    try:
        keys = resolve_keys(st, extractors)
        rows, y, _ = _select(st, keys, split, target, incomplete)
        meta = st.columns(["item_id", "split", "group", "generator", "prompt"]).iloc[rows].reset_index(drop=True)
        if target is not None:
            meta[target] = y
        names = {k: st.feature_names(k) for k in keys}
        seen: dict[str, int] = {}
        for ns in names.values():
            for n in ns:
                seen[n] = seen.get(n, 0) + 1
        parts = [meta]
        for k in keys:
            cols = [f"{k}:{n}" if seen[n] > 1 else n for n in names[k]]
            parts.append(pd.DataFrame(st.read(k, rows), columns=cols))
        return pd.concat(parts, axis=1)
    finally:
        if own:
            st.close(checkpoint=False)
