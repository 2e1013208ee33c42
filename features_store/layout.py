"""The store file's format (docs/architecture.md): status codes, value dtypes, a key's state in
memory, the manifest table as one HDF5 dataset per column, and the reads every part shares.

Nothing here knows the journal's or the checkpoint's rules; they build on it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import journal
from .errors import StoreError, first_line

FORMAT_VERSION = 1
PENDING, DONE, FAILED = 0, 1, 2
DTYPES = ("float32", "float16")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class KeyConfig:
    """One extractor configuration (key) of an open store: its status per item, and the rows and
    errors recorded since the file was last written (the overlays a checkpoint folds in)."""

    key: str
    attrs: dict[str, Any]  # name, kind, identity (JSON text), hash, dtype, created, updated
    status: np.ndarray  # int8 [N]
    dim: int = 0  # 0 until the first row is written
    feature_names: list[str] | None = None
    overlay: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (rows, values) not yet in file
    err_overlay: dict[int, str] = field(default_factory=dict)  # row -> message ("" clears)
    dirty: bool = False  # differs from the file (status/attrs/overlay)


def open_h5(real: Path, shown: Path):
    """The store file, read-only; a damaged one is a one-line StoreError naming it."""
    import h5py

    try:
        return h5py.File(real, "r", locking=False)
    except OSError as err:
        size = real.stat().st_size if real.exists() else 0
        journal_dir = Path(f"{real}.journal")
        kept = len(journal.files(journal_dir))
        raise StoreError(
            f"{shown} is damaged or not a feature store ({first_line(err)}; {size} bytes): move it aside and "
            f"rerun the features into a new file" + (f" (the {kept} journal file(s) in {journal_dir} belong to "
                                                   "it: move them along)" if kept else "")) from None


def refuse_if_not_a_store(real: Path, shown: Path) -> None:
    """An existing path that is not an HDF5 file (a user's file or folder given as a store or cache) is refused
    with open_h5's one line before anything (the lock, <file>.journal/) is created beside it."""
    import h5py

    if real.exists() and not (real.is_file() and h5py.is_hdf5(real)):
        if real.is_dir():
            raise StoreError(f"{shown} is a folder, not a feature store file: give a .h5 file path")
        open_h5(real, shown).close()
    if real.is_file():  # an HDF5 file of the user's own (no store marks): writing would replace it, data and all
        with open_h5(real, shown) as f:
            ours = "format_version" in f.attrs or "manifest" in f or "features" in f
        if not ours:
            raise StoreError(f"{shown} is an HDF5 file but not a feature store (no manifest, features or "
                             "format_version): give a new .h5 file path; it was left as it was")


def is_null(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def read_rows(ds, sorted_unique_rows: np.ndarray) -> np.ndarray:
    """Rows of a 2-D dataset, read as contiguous runs (h5py point selections are slow)."""
    rows = sorted_unique_rows
    out = np.empty((len(rows), ds.shape[1]), dtype=ds.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for s, e in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
        out[s:e] = ds[int(rows[s]): int(rows[e - 1]) + 1]
    return out


MAX_FIXED = 4096  # bytes; longer strings are stored variable-length


def write_manifest(f, df: pd.DataFrame) -> None:
    """One dataset per column. Text is UTF-8, fixed-length where the longest value allows
    (h5py reads those in one copy, ~10x faster than variable-length strings)."""
    import h5py

    g = f.create_group("manifest")
    g.attrs["columns"] = json.dumps(list(df.columns))
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            g.create_dataset(col, data=s.to_numpy(dtype=float if pd.api.types.is_float_dtype(s) else np.int64))
            continue
        vals = s.to_numpy(dtype=object)
        null = np.array([is_null(v) or v is pd.NA for v in vals], dtype=bool)
        raw = [b"" if n else str(v).encode("utf-8") for v, n in zip(vals, null)]
        longest = max((len(b) for b in raw), default=1) or 1
        if longest <= MAX_FIXED:
            fixed = h5py.string_dtype("utf-8", longest)
            ds = g.create_dataset(col, data=np.array(raw, dtype=fixed), dtype=fixed)
        else:
            ds = g.create_dataset(col, data=np.array([b.decode() for b in raw], dtype=object),
                                  dtype=h5py.string_dtype())
        ds.attrs["kind"] = "str"
        if null.any():
            g.create_dataset(f"{col}.null", data=null)


def read_manifest(f, names: list[str] | None = None) -> pd.DataFrame | None:
    if f is None or "manifest" not in f:
        return None
    g = f["manifest"]
    cols = names or json.loads(g.attrs["columns"])
    data = {}
    for col in cols:
        if col not in g:
            raise KeyError(f"manifest column {col!r} not in {f.filename}")
        ds = g[col]
        if ds.attrs.get("kind") == "str":
            if ds.dtype.kind == "S":  # fixed length: one read, then decode
                vals = np.array([b.decode("utf-8") for b in ds[...].tolist()], dtype=object)
            else:
                vals = ds.asstr()[...].astype(object)
            if f"{col}.null" in g:
                vals[g[f"{col}.null"][...]] = None
            data[col] = vals
        else:
            data[col] = ds[...]
    return pd.DataFrame(data, columns=cols)
