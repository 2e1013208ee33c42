"""The HDF5 feature store (layout in docs/architecture.md).

Why it is built this way:

* The ``.h5`` file is never modified in place. A checkpoint copies it, patches the
  copy with h5py, fsyncs and ``os.replace``s it, so ``kill -9`` at any moment leaves
  either the old or the new file, never a half-written one (HDF5 files written in
  place are easily corrupted by a crash).
* Rows computed between checkpoints go to a journal folder beside the file
  (``<store>.h5.journal/``, one atomically renamed ``.npz`` per batch). Opening the
  store replays it; reads see it; ``checkpoint()`` folds it in. A crash therefore
  loses at most the batch in flight.
* Structural changes (new manifest items, a new extractor configuration) are written
  at once, so every journal entry refers to items and keys the file already has.
* Value arrays are contiguous (not chunked) so a full read runs near disk/page-cache
  speed; growing the manifest rewrites the file, which is rare.
* One writer at a time (an ``flock`` in the journal folder); readers never lock.

The parts, bottom-up: :mod:`~features_store.errors`, :mod:`~features_store.layout` (the file
format), :mod:`~features_store.journal`, :mod:`~features_store.locking`,
:mod:`~features_store.checkpoint` (writing the file), :mod:`~features_store.store_manifest` (the
items); here the store itself: opening (replaying the journal), keys, rows.
"""
from __future__ import annotations

import glob
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import journal, locking
from .checkpoint import Checkpoints
from .errors import IdentityMismatch, StoreError, write_error  # noqa: F401 (re-exported: importers use store.X)
from .hints import suggest
from .layout import (DONE, DTYPES, FAILED, PENDING, KeyConfig, canonical_json, now, open_h5, read_rows,
                     refuse_if_not_a_store)
from .layout import FORMAT_VERSION  # noqa: F401 (re-exported: importers use store.X)
from .store_manifest import StoreManifest


class FeatureStore(StoreManifest, Checkpoints):
    """HDF5 store of per-item feature vectors for one dataset (or one shard of it).

    ``mode="r"`` reads (file + journal, no lock); ``mode="a"`` creates or updates.
    ``dtype`` ("float32" default, or "float16") is fixed when the store is created;
    opening it with another dtype is refused.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a", dtype: str | None = None,
                 fsync_journal: bool = False):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if dtype is not None and str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.path = Path(path)
        # Files are acted on at the resolved path: the same store reached through a symlink
        # shares one lock and one journal, and os.replace keeps the symlink a symlink.
        self.real_path = Path(os.path.realpath(self.path))
        self.journal_dir = Path(f"{self.real_path}.journal")
        self.mode = mode
        # The .h5 is always fsynced before it is swapped in. Journal files need no fsync to
        # survive kill -9 (the page cache does); after a power cut an unreadable one is
        # discarded on open (its rows are pending again). fsync_journal=True trades speed
        # for keeping those rows too.
        self.fsync_journal = fsync_journal
        self.last_checkpoint_s = 0.0  # the runner spaces checkpoints by it (a big file costs a copy)
        self._h5 = None
        self._lock_fd: int | None = None
        if mode == "r" and not self.path.exists():
            raise FileNotFoundError(f"feature store {self.path} not found")
        if mode == "a":
            refuse_if_not_a_store(self.real_path, self.path)  # before <file>.journal/ is made beside a user's file
            self._lock()
            # we hold the lock: temporaries are leftovers of a killed writer
            journal.remove_stale_temporaries(self.journal_dir)
            for p in self.real_path.parent.glob(f".{glob.escape(self.real_path.name)}.tmp-*"):  # escaped: name "*.h5"
                p.unlink(missing_ok=True)
        for attempt in range(5):  # a writer may fold (and delete) journal files while we read them
            try:
                self._load()
                break
            except FileNotFoundError:
                if mode == "a" or attempt == 4:
                    raise
                self._close_h5()
        stored = self.meta.get("dtype")
        requested = str(np.dtype(dtype)) if dtype else None
        if stored and requested and stored != requested:
            raise StoreError(f"{self.path} stores {stored} values; opened with dtype={requested}. "
                             "Use another store file (mixing precisions is refused).")
        self.dtype = np.dtype(stored or requested or "float32")

    # ----------------------------------------------------------- lifecycle
    def _lock(self) -> None:
        self._lock_fd = locking.acquire(self.journal_dir, self.path, self)

    def _close_h5(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def close(self, checkpoint: bool = True) -> None:
        try:
            if checkpoint and self.mode == "a":
                self.checkpoint()
        finally:
            self._close_h5()
            if self._lock_fd is not None:
                locking.release(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # on an error the journal keeps what was computed; the next open replays it
        self.close(checkpoint=exc_type is None)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, {len(self)} items, keys={self.keys()})"

    # --------------------------------------------------------------- loading
    def _load(self) -> None:
        import h5py

        self.meta: dict[str, Any] = {}
        self._df: pd.DataFrame | None = None  # loaded on first use (reading strings is the slow part)
        self._n: int | None = None  # number of items; None: no manifest yet
        self._configs: dict[str, KeyConfig] = {}
        self._applied: list[Path] = []
        self._id_index: dict[str, int] | None = None
        self._ids: np.ndarray | None = None
        self._meta_dirty = False
        self._media: dict[str, np.ndarray] | None = None  # media fingerprints, loaded on first use (fingerprint.py)
        self._media_dirty = False
        if self.real_path.exists():
            self._h5 = open_h5(self.real_path, self.path)
            f = self._h5
            self.meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if "manifest" in f:
                self._n = int(f["manifest"]["item_id"].shape[0])
            for key, g in f.get("features", {}).items():
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
                names = list(g["feature_names"].asstr()[...]) if "feature_names" in g else None
                self._configs[key] = KeyConfig(key, attrs, g["status"][...].astype(np.int8),
                                             int(attrs.get("dim", 0)), names)
        seqs = journal.files(self.journal_dir)
        if seqs and self._n is None:
            raise StoreError(f"{self.journal_dir} holds journal files but {self.path} is missing; "
                             "delete the journal folder or restore the store file")
        for seq, p in seqs:
            try:
                entry = journal.read(seq, p)
                self._apply(entry)
            except FileNotFoundError:
                raise
            except Exception as err:  # damaged (power cut), changed after writing, or not this store's
                self._set_aside(p, err)
                continue
            self._applied.append(p)
        self._seq = (seqs[-1][0] + 1) if seqs else 0

    def _set_aside(self, p: Path, err: Exception) -> None:
        """A journal file that cannot be trusted: never applied, renamed aside (not deleted);
        its rows stay pending and are computed again."""
        trusted_format = isinstance(err, (journal.BadEntry, StoreError))
        what = "untrusted" if trusted_format else "unreadable"
        why = str(err) if trusted_format else f"{type(err).__name__}: {err}"
        if self.mode == "a":
            dest = journal.set_aside(p)
            warnings.warn(f"{what} journal file {p} set aside as {dest.name} ({why}); its rows will be computed "
                          "again", stacklevel=4)
        else:
            warnings.warn(f"{what} journal file {p} ignored ({why}); a writer sets it aside and recomputes its rows",
                          stacklevel=4)

    def _apply(self, e: journal.Entry) -> None:
        cfg = self._configs.get(e.key)
        if cfg is None:
            raise StoreError(f"journal file {e.path} refers to key {e.key!r}, which {self.path} does not hold")
        ids = self.item_ids()
        for idx, got in ((e.done_idx, e.done_ids), (e.fail_idx, e.fail_ids)):
            if len(idx) and (idx.min() < 0 or idx.max() >= len(ids) or not np.array_equal(ids[idx].astype(str), got)):
                raise StoreError(f"journal file {e.path} does not match the manifest of {self.path} "
                                 "(items differ); it belongs to another store")
        self._apply_rows(cfg, e.done_idx, e.values, e.fail_idx, e.messages)

    def _apply_rows(self, cfg: KeyConfig, done_idx, values, fail_idx, messages) -> None:
        if len(done_idx):
            if cfg.dim and values.shape[1] != cfg.dim:
                raise StoreError(f"{cfg.key}: rows of width {values.shape[1]}, but the store holds width {cfg.dim}")
            cfg.dim = int(values.shape[1])
            cfg.overlay.append((np.asarray(done_idx, np.int64), values))
            for i in done_idx[cfg.status[done_idx] == FAILED]:
                cfg.err_overlay[int(i)] = ""
            cfg.status[done_idx] = DONE
        for i, msg in zip(fail_idx, messages):
            cfg.err_overlay[int(i)] = str(msg)
        if len(fail_idx):
            cfg.status[np.asarray(fail_idx, np.int64)] = FAILED
        cfg.dirty = True


    # ----------------------------------------------------------- configs
    def keys(self) -> list[str]:
        return sorted(self._configs)

    def ensure_config(self, key: str, identity: dict, feature_names: list[str] | None = None,
                      name: str | None = None, kind: str = "") -> None:
        """Declare an extractor configuration; refuses a key whose stored identity differs."""
        self._need_write()
        ident = canonical_json(identity)
        cfg = self._configs.get(key)
        if cfg is not None:
            if cfg.attrs.get("identity") != ident:
                raise IdentityMismatch(
                    f"{self.path}: key {key!r} is stored with a different identity.\n  stored: "
                    f"{cfg.attrs.get('identity')}\n  given:  {ident}\nThe numbers would be mixed: use another store."
                )
            if cfg.attrs.get("dtype", str(self.dtype)) != str(self.dtype):
                raise StoreError(f"{key}: stored as {cfg.attrs['dtype']}, store dtype is {self.dtype}")
            return
        if self._n is None:
            raise StoreError("set_manifest() must come before ensure_config()")
        name = name or identity.get("name") or key.rsplit("-", 1)[0]
        stamp = now()
        attrs = {"name": name, "kind": kind, "identity": ident, "hash": key.rsplit("-", 1)[-1],
                 "dtype": str(self.dtype), "dim": 0, "created": stamp, "updated": stamp}
        self._configs[key] = KeyConfig(key, attrs, np.zeros(len(self), np.int8), 0,
                                     list(feature_names) if feature_names else None, dirty=True)
        self.checkpoint()  # journal entries may only refer to keys the file holds

    def set_feature_names(self, key: str, names: list[str]) -> None:
        cfg = self._cfg(key)
        if cfg.feature_names != list(names):
            cfg.feature_names = list(names)
            cfg.dirty = True

    def batch_sizes(self, key: str) -> list[int]:
        """Batch sizes the rows of ``key`` were computed with (attr ``batch_sizes``; [] if unrecorded).
        Batch size is not in the key, but changes the numbers (~1e-5): see runner.settle_batch_size."""
        return [int(b) for b in json.loads(self._cfg(key).attrs.get("batch_sizes", "[]"))]

    def set_batch_sizes(self, key: str, sizes: Iterable[int]) -> None:
        cfg = self._cfg(key)
        text = json.dumps(sorted({int(b) for b in sizes}))
        if cfg.attrs.get("batch_sizes") != text:
            cfg.attrs["batch_sizes"] = text
            cfg.dirty = True

    def add_timing(self, key: str, seconds: float, items: int, device: str | None = None) -> None:
        """Accumulate extraction wall time over runs (the submission's "runtime per item")."""
        cfg = self._cfg(key)
        total = float(cfg.attrs.get("seconds_total", 0.0)) + float(seconds)
        n = int(cfg.attrs.get("items_timed", 0)) + int(items)
        cfg.attrs.update(seconds_total=total, items_timed=n, seconds_per_item=total / n if n else 0.0)
        if device:
            cfg.attrs["device"] = str(device)
        cfg.dirty = True

    def _cfg(self, key: str) -> KeyConfig:
        try:
            return self._configs[key]
        except KeyError:
            raise KeyError(f"{self.path} holds no key {key!r}.{suggest(key, self.keys())} "
                           f"Keys: {', '.join(self.keys()) or '(none)'}") from None

    def config(self, key: str) -> dict[str, Any]:
        cfg = self._cfg(key)
        c = self.counts(key)
        return {"key": key, "name": cfg.attrs.get("name"), "kind": cfg.attrs.get("kind"), "dim": cfg.dim,
                "dtype": cfg.attrs.get("dtype"), "identity": json.loads(cfg.attrs["identity"]),
                "created": cfg.attrs.get("created"), "updated": cfg.attrs.get("updated"), **c}

    def feature_names(self, key: str) -> list[str]:
        cfg = self._cfg(key)
        if cfg.feature_names and len(cfg.feature_names) == cfg.dim:
            return list(cfg.feature_names)
        return [f"{cfg.attrs.get('name', key)}_{i}" for i in range(cfg.dim)]

    # ----------------------------------------------------------- rows
    def status(self, key: str) -> np.ndarray:
        return self._cfg(key).status.copy()

    def counts(self, key: str) -> dict[str, int]:
        s = self._cfg(key).status
        return {"done": int((s == DONE).sum()), "failed": int((s == FAILED).sum()), "pending": int((s == PENDING).sum())}

    def pending(self, key: str, retry_failed: bool = True) -> np.ndarray:
        s = self._cfg(key).status
        return np.flatnonzero((s == PENDING) | ((s == FAILED) if retry_failed else False))

    def record(self, key: str, done_idx=(), values=None, fail_idx=(), messages=()) -> None:
        """Rows computed and items failed in one batch: one journal file, then memory."""
        self._need_write()
        cfg = self._cfg(key)
        n = len(self)
        done_idx = np.asarray(done_idx, dtype=np.int64).reshape(-1)
        fail_idx = np.asarray(fail_idx, dtype=np.int64).reshape(-1)
        if values is None:
            values = np.zeros((0, cfg.dim), self.dtype)
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[0] != len(done_idx):
            raise ValueError(f"{key}: values must be [{len(done_idx)}, D], got {values.shape}")
        if len(done_idx) and cfg.dim and values.shape[1] != cfg.dim:
            raise StoreError(f"{key}: rows of width {values.shape[1]}, but the store holds width {cfg.dim}")
        if len(messages) != len(fail_idx):
            raise ValueError(f"{key}: {len(fail_idx)} failed items but {len(messages)} messages")
        for idx in (done_idx, fail_idx):
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"{key}: row index out of range 0..{n - 1}")
        if not len(done_idx) and not len(fail_idx):
            return
        values = values.astype(self.dtype, copy=False)
        ids = self.item_ids()
        try:
            journal.write(self.journal_dir, self._seq, key, done_idx, ids[done_idx].astype(str), values,
                          fail_idx, ids[fail_idx].astype(str), [str(m) for m in messages], fsync=self.fsync_journal)
        except OSError as err:
            journal.remove_stale_temporaries(self.journal_dir)
            raise write_error(err, self.journal_dir, self) from None
        self._applied.append(self.journal_dir / f"{self._seq:010d}.npz")
        self._seq += 1
        self._apply_rows(cfg, done_idx, values, fail_idx, [str(m) for m in messages])

    def write(self, key: str, indices, values) -> None:
        self.record(key, indices, values)

    def fail(self, key: str, indices, messages) -> None:
        self.record(key, fail_idx=indices, messages=messages)

    def read(self, key: str, rows=None, dtype=np.float32) -> np.ndarray:
        """Values [N or len(rows), D] (NaN where not done), journal included.
        ``dtype=None`` returns the stored dtype."""
        cfg = self._cfg(key)
        out_dtype = self.dtype if dtype is None else np.dtype(dtype)
        n = len(self)
        ds = self._h5["features"][key]["values"] if (self._h5 is not None and "values" in self._h5["features"][key]) else None
        if rows is None:
            out = np.empty((n, cfg.dim), dtype=self.dtype)
            if ds is not None and ds.shape == out.shape:
                ds.read_direct(out)
            else:
                out.fill(np.nan)
            for idx, vals in cfg.overlay:
                out[idx] = vals
            return out if out.dtype == out_dtype else out.astype(out_dtype)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.full((len(rows), cfg.dim), np.nan, dtype=out_dtype)
        if ds is not None and len(rows):
            order = np.argsort(rows, kind="stable")
            uniq, inv = np.unique(rows[order], return_inverse=True)
            got = read_rows(ds, uniq)
            out[order] = got[inv]
        if cfg.overlay:
            where = {int(r): k for k, r in enumerate(rows)}
            for idx, vals in cfg.overlay:
                for j, r in enumerate(idx):
                    k = where.get(int(r))
                    if k is not None:
                        out[k] = vals[j]
        return out

    def errors(self, key: str) -> pd.DataFrame:
        """Failed items of ``key`` with their reasons."""
        cfg = self._cfg(key)
        msgs = self._file_errors(key)
        for i, m in cfg.err_overlay.items():
            msgs[i] = m
        rows = np.flatnonzero(cfg.status == FAILED)
        return pd.DataFrame({"row": rows, "item_id": self.item_ids()[rows],
                             "error": [msgs[i] for i in rows]})

    def _file_errors(self, key: str) -> np.ndarray:
        n = len(self)
        out = np.full(n, "", dtype=object)
        if self._h5 is not None and key in self._h5.get("features", {}):
            e = self._h5["features"][key]["errors"].asstr()[...]
            out[: len(e)] = e
        return out


    # ----------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "items": len(self), "dtype": str(self.dtype),
            "dataset": self.meta.get("name"), "root": self.meta.get("root"), "shard": self.meta.get("shard") or None,
            "source": self.meta.get("source") or None, "dataset_id": self.meta.get("dataset_id") or None,
            "journal_files": len(self._applied),
            "keys": {k: {"name": c.attrs.get("name"), "dim": c.dim, **self.counts(k)} for k, c in sorted(self._configs.items())},
        }
