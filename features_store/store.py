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
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import journal
from .manifest import INPUT_COLUMNS, Manifest

FORMAT_VERSION = 1
PENDING, DONE, FAILED = 0, 1, 2
DTYPES = ("float32", "float16")
_BLOCK_ROWS = 8192  # rows copied at a time when a rewrite moves value arrays


class StoreError(RuntimeError):
    """A store cannot be used as asked (the message says why and what to do)."""


class IdentityMismatch(StoreError):
    """A key exists with a different identity (refused: its numbers would be mixed)."""


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
            f"{shown} is damaged or not a feature store ({_first_line(err)}; {size} bytes): move it aside and "
            f"rerun the features into a new file" + (f" (the {kept} journal file(s) in {journal_dir} belong to "
                                                   "it: move them along)" if kept else "")) from None


def _refuse_if_not_a_store(real: Path, shown: Path) -> None:
    """An existing path that is not an HDF5 file (a user's file or folder given as a store or cache) is refused
    with open_h5's one line before anything is created beside it."""
    import h5py

    if real.exists() and not (real.is_file() and h5py.is_hdf5(real)):
        if real.is_dir():
            raise StoreError(f"{shown} is a folder, not a feature store file: give a .h5 file path")
        open_h5(real, shown).close()


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def write_error(err: BaseException, target: Path, store: "FeatureStore | None" = None) -> StoreError:
    """A one-line StoreError for a failed write: disk full, read-only folder, or the OS's reason.
    HDF5 reports a full disk with errors such as "Can't decrement id ref count", without errno:
    free space is checked to name the cause."""
    import errno as E

    folder = target if target.is_dir() else target.parent
    code = getattr(err, "errno", None)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    kept = (f"; nothing computed is lost: {store.path} and its journal keep every finished row, rerun to continue"
            if store is not None else "")
    if code in (E.ENOSPC, E.EDQUOT) or (code is None and free is not None and free < 1 << 20):
        why = f"disk full ({free // 1024 if free is not None else '?'} KiB free on the file system of {folder})"
        todo = "free space there or pass --store on another disk"
    elif code in (E.EACCES, E.EPERM, E.EROFS) or not os.access(folder, os.W_OK):
        why = f"{folder} is not writable ({'read-only file system' if code == E.EROFS else 'permission denied'})"
        todo = "make it writable, or pass --store in a writable folder (copy the store there to keep its rows)"
    else:
        why, todo = _first_line(err), "check the disk and the folder's permissions"
    return StoreError(f"cannot write {target}: {why}; {todo}{kept}")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class _Config:
    key: str
    attrs: dict[str, Any]  # name, kind, identity (JSON text), hash, dtype, created, updated
    status: np.ndarray  # int8 [N]
    dim: int = 0  # 0 until the first row is written
    feature_names: list[str] | None = None
    overlay: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (rows, values) not yet in file
    err_overlay: dict[int, str] = field(default_factory=dict)  # row -> message ("" clears)
    dirty: bool = False  # differs from the file (status/attrs/overlay)


class FeatureStore:
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
            _refuse_if_not_a_store(self.real_path, self.path)  # before <file>.journal/ is made beside a user's file
            self._lock()
            # we hold the lock: temporaries are leftovers of a killed writer
            journal.remove_stale_temporaries(self.journal_dir)
            for p in self.real_path.parent.glob(f".{self.real_path.name}.tmp-*"):
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
        try:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.journal_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(err, self.journal_dir, self) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StoreError(f"{self.path} is being written by another process; use --shard to run "
                             "extractions in parallel, each into its own file") from None

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
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
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
        self._configs: dict[str, _Config] = {}
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
                self._configs[key] = _Config(key, attrs, g["status"][...].astype(np.int8),
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

    def _apply_rows(self, cfg: _Config, done_idx, values, fail_idx, messages) -> None:
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

    # ----------------------------------------------------------- manifest
    def __len__(self) -> int:
        return self._n or 0

    @property
    def df(self) -> pd.DataFrame:
        """The stored manifest table (do not modify)."""
        if self._n is None:
            raise StoreError(f"{self.path} has no manifest yet")
        if self._df is None:
            self._df = _read_manifest(self._h5)
        return self._df

    def columns(self, names: list[str]) -> pd.DataFrame:
        """Some manifest columns only (cheaper than ``df`` on a large store)."""
        if self._df is not None or self._n is None:
            return self.df[names]
        return _read_manifest(self._h5, names)

    def item_ids(self) -> np.ndarray:
        if self._df is None and self._n is not None and self._ids is None:
            self._ids = self.columns(["item_id"])["item_id"].to_numpy(dtype=object)
        return self._ids if self._df is None else self.df["item_id"].to_numpy(dtype=object)

    def manifest(self) -> Manifest:
        labels = json.loads(self.meta.get("labels", "[]"))
        m = Manifest.__new__(Manifest)
        m.root, m.name, m.adapter = self.meta.get("root", ""), self.meta.get("name", ""), self.meta.get("adapter", "")
        m.source = self.meta.get("source", "")
        m.load_problems, m._label_columns, m.df = [], ["mos", *[c for c in labels if c != "mos"]], self.df
        return m

    def index_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Store rows of ``item_ids`` (KeyError naming the first unknown id)."""
        if self._id_index is None:
            self._id_index = {iid: i for i, iid in enumerate(self.item_ids())}
        out = []
        for iid in item_ids:
            try:
                out.append(self._id_index[iid])
            except KeyError:
                raise KeyError(f"item {iid!r} is not in {self.path}") from None
        return np.asarray(out, dtype=np.int64)

    def set_manifest(self, manifest: Manifest) -> int:
        """Create the manifest, or extend it with new items (existing rows keep their index).

        Label columns of existing items are updated; their inputs (path, prompt, generator)
        may not change, since stored features were computed from them. Returns the number
        of items added."""
        self._need_write()
        if not self.manifest_changes(manifest):
            self._update_meta(manifest)
            return 0
        new = manifest.df
        if self._n is None:
            self._df = new.reset_index(drop=True).copy()
            added = len(new)
        else:
            old = self.df
            pos = {iid: i for i, iid in enumerate(old["item_id"].to_numpy(dtype=object))}
            rows = np.array([pos.get(i, -1) for i in new["item_id"].to_numpy(dtype=object)], dtype=np.int64)
            known = rows >= 0
            self._check_dataset(manifest, int((~known).sum()))
            changed = []
            for col in INPUT_COLUMNS:
                a = old[col].to_numpy(dtype=object)[rows[known]]
                b = new[col].to_numpy(dtype=object)[known]
                diff = np.flatnonzero(~_same(a, b))
                changed += [(new["item_id"].to_numpy()[known][k], col, a[k], b[k]) for k in diff[:5]]
            if changed:
                lines = "\n".join(f"  - {i}: {c} {x!r} -> {y!r}" for i, c, x, y in changed[:10])
                raise StoreError(f"{self.path}: inputs of existing items changed, so their stored features are "
                                 f"stale:\n{lines}\nUse a new store file for the changed dataset.")
            merged = pd.concat([old, new[~known]], ignore_index=True) if (~known).any() else old.copy()
            label_cols = [c for c in new.columns if c not in ("item_id", *INPUT_COLUMNS)]
            for col in label_cols:
                if col not in merged:
                    merged[col] = np.nan
                vals = merged[col].to_numpy(dtype=object).copy()
                vals[rows[known]] = new[col].to_numpy(dtype=object)[known]
                merged[col] = pd.Series(vals).infer_objects()
            added = int((~known).sum())
            if not added and _frames_equal(old, merged):
                self._update_meta(manifest)
                return 0
            self._df = merged
        self._n, self._ids = len(self._df), None
        self._id_index = None
        for cfg in self._configs.values():
            cfg.status = np.concatenate([cfg.status, np.zeros(len(self._df) - len(cfg.status), np.int8)])
        self._update_meta(manifest)
        self._guarded(self._rewrite)
        return added

    def manifest_changes(self, manifest: Manifest) -> bool:
        """Whether :meth:`set_manifest` would change the stored table: new items, new columns, or other
        values in the rows of ``manifest``'s items. Costs the size of ``manifest``, not of the store:
        a shard holds a slice of the manifest the merged store already holds (measured before this
        check: 100 shards of a 100,000-item manifest, 40 s of merge, most of it comparing whole tables)."""
        if self._n is None:
            return True
        new = manifest.df
        try:
            rows = self.index_of(new["item_id"])
        except KeyError:
            return True  # new items
        old = self.df
        if not set(new.columns) <= set(old.columns):
            return True  # new label columns
        return not all(_same(old[c].to_numpy(dtype=object)[rows], new[c].to_numpy(dtype=object)).all()
                       for c in new.columns)

    def dataset(self) -> dict[str, str]:
        """The dataset this store holds: name, source (folder / label file), dataset_id."""
        return {k: str(self.meta.get(k, "")) for k in ("name", "source", "dataset_id", "root")}

    def _check_dataset(self, manifest: Manifest, added: int) -> None:
        """Items of another dataset are never added to a store (its train split would hold foreign rows).
        The same items under a new source (a moved folder) are accepted."""
        from .naming import dataset_id, dataset_source

        have = self.meta.get("dataset_id")
        if added and have and have != dataset_id(manifest):
            raise StoreError(
                f"{self.path} holds dataset {self.meta.get('name')!r} from {self.meta.get('source') or self.meta.get('root')} "
                f"(id {have}); {manifest.name!r} from {dataset_source(manifest)} (id {dataset_id(manifest)}) would add "
                f"{added} items to it. Use another store (the default store name identifies the dataset).")

    def _update_meta(self, manifest: Manifest) -> None:
        from .naming import dataset_id, dataset_source

        labels = sorted(set(json.loads(self.meta.get("labels", "[]"))) | set(manifest.labels))
        meta = {"name": manifest.name, "root": manifest.root, "adapter": manifest.adapter,
                "labels": json.dumps(labels), "source": dataset_source(manifest), "dataset_id": dataset_id(manifest)}
        if any(self.meta.get(k) != v for k, v in meta.items()):
            self.meta.update(meta)
            self._meta_dirty = True

    def set_shard(self, shard: tuple[int, int] | None) -> None:
        """Record which shard (k, N) this file holds; a file is refused for another shard."""
        text = f"{shard[0]}/{shard[1]}" if shard else ""
        have = self.meta.get("shard", "")
        if have != text:
            if have and len(self):
                raise StoreError(f"{self.path} holds shard {have or 'all'}, not {text or 'all'}")
            self.meta["shard"] = text
            self._meta_dirty = True

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
        now = _now()
        attrs = {"name": name, "kind": kind, "identity": ident, "hash": key.rsplit("-", 1)[-1],
                 "dtype": str(self.dtype), "dim": 0, "created": now, "updated": now}
        self._configs[key] = _Config(key, attrs, np.zeros(len(self), np.int8), 0,
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

    def _cfg(self, key: str) -> _Config:
        try:
            return self._configs[key]
        except KeyError:
            from .hints import suggest

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
            got = _read_rows(ds, uniq)
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

    # ----------------------------------------------------------- writing the file
    def _need_write(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.path} was opened read-only (mode='r')")

    @property
    def dirty(self) -> bool:
        return self._meta_dirty or any(c.dirty for c in self._configs.values())

    def checkpoint(self) -> None:
        """Fold the journal into a new copy of the file and swap it in atomically."""
        self._need_write()
        if not self.dirty or self._n is None:
            return
        t0 = time.perf_counter()
        try:
            self._guarded(self._checkpoint)
        finally:
            self.last_checkpoint_s = time.perf_counter() - t0

    def _guarded(self, write) -> None:
        """Run a file rewrite; an OS/HDF5 write failure becomes a one-line StoreError (the old file
        and the journal are untouched until the new file is complete)."""
        try:
            write()
        except StoreError:
            raise
        except (OSError, RuntimeError) as err:
            raise write_error(err, self.real_path, self) from None

    def _checkpoint(self) -> None:
        if not self.real_path.exists():
            return self._rewrite()
        tmp = self._tmp_path()
        try:
            shutil.copyfile(self.real_path, tmp)
            import h5py

            with h5py.File(tmp, "r+", locking=False) as f:
                self._write_meta(f)
                for cfg in self._configs.values():
                    if cfg.dirty:
                        self._write_config(f, cfg, fresh=False)
            self._swap_in(tmp)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _rewrite(self) -> None:
        """Write the whole file anew (creation, or the manifest grew)."""
        import h5py

        tmp = self._tmp_path()
        try:
            with h5py.File(tmp, "w", locking=False) as f:
                self._write_meta(f)
                _write_manifest(f, self.df)
                for cfg in self._configs.values():
                    self._write_config(f, cfg, fresh=True)
            self._swap_in(tmp)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _tmp_path(self) -> Path:
        return self.real_path.with_name(f".{self.real_path.name}.tmp-{os.getpid()}")

    def _write_meta(self, f) -> None:
        self.meta.setdefault("created", _now())
        self.meta.update({"format_version": FORMAT_VERSION, "dtype": str(self.dtype), "updated": _now()})
        self.meta.setdefault("shard", "")
        for k, v in self.meta.items():  # manifest *content* changes always go through _rewrite
            f.attrs[k] = v
        from .fingerprint import write_group

        write_group(self, f)

    def _write_config(self, f, cfg: _Config, fresh: bool) -> None:
        import h5py

        n = len(self)
        g = f.require_group(f"features/{cfg.key}")
        old = self._h5["features"][cfg.key] if (self._h5 is not None and cfg.key in self._h5.get("features", {})) else None
        # status and errors: small, rewritten whole
        if "status" in g:
            g["status"][...] = cfg.status
        else:
            g.create_dataset("status", data=cfg.status, dtype=np.int8)
        if cfg.err_overlay or "errors" not in g:
            errs = self._file_errors(cfg.key)
            for i, m in cfg.err_overlay.items():
                errs[i] = m
            if "errors" in g:
                g["errors"][...] = errs
            else:
                g.create_dataset("errors", data=errs.astype(object), dtype=h5py.string_dtype())
        # values: created once the width is known; a fresh file copies the old rows block-wise
        if cfg.dim:
            if "values" not in g:
                ds = g.create_dataset("values", shape=(n, cfg.dim), dtype=self.dtype, fillvalue=np.nan)
                if old is not None and "values" in old:
                    src = old["values"]
                    for a in range(0, src.shape[0], _BLOCK_ROWS):
                        b = min(a + _BLOCK_ROWS, src.shape[0])
                        ds[a:b] = src[a:b]
            ds = g["values"]
            for a, b, vals in _runs(cfg.overlay):
                ds[a:b] = vals
            names = self.feature_names(cfg.key)
            if "feature_names" in g and list(g["feature_names"].asstr()[...]) != names:
                del g["feature_names"]
            if "feature_names" not in g:
                g.create_dataset("feature_names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        cfg.attrs.update({"dim": cfg.dim, "updated": _now(), "done": int((cfg.status == DONE).sum()),
                          "failed": int((cfg.status == FAILED).sum())})
        for k, v in cfg.attrs.items():
            g.attrs[k] = v

    def _swap_in(self, tmp: Path) -> None:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._close_h5()
        os.replace(tmp, self.real_path)
        journal.fsync_dir(self.real_path.parent)
        # only now are the folded journal files redundant (replaying them again is harmless)
        for p in self._applied:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self._applied = []
        import h5py

        self._h5 = h5py.File(self.real_path, "r", locking=False)
        self._meta_dirty = self._media_dirty = False
        for cfg in self._configs.values():
            cfg.overlay, cfg.err_overlay, cfg.dirty = [], {}, False

    # ----------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "items": len(self), "dtype": str(self.dtype),
            "dataset": self.meta.get("name"), "root": self.meta.get("root"), "shard": self.meta.get("shard") or None,
            "source": self.meta.get("source") or None, "dataset_id": self.meta.get("dataset_id") or None,
            "journal_files": len(self._applied),
            "keys": {k: {"name": c.attrs.get("name"), "dim": c.dim, **self.counts(k)} for k, c in sorted(self._configs.items())},
        }


# --------------------------------------------------------------------- helpers
def _null(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _same(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise: equal, or both missing (None/NaN). One vectorised pass, no Python loop."""
    x, y = np.asarray(x, dtype=object), np.asarray(y, dtype=object)
    eq = np.equal(x, y).astype(bool) if len(x) else np.zeros(0, bool)
    return eq | (pd.isna(x) & pd.isna(y))


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all(_same(a[c].to_numpy(dtype=object), b[c].to_numpy(dtype=object)).all() for c in a.columns)


def _runs(overlay: list[tuple[np.ndarray, np.ndarray]]):
    """Overlay rows (last write wins) as contiguous (start, stop, values) runs."""
    if not overlay:
        return []
    idx = np.concatenate([i for i, _ in overlay])
    vals = np.concatenate([v for _, v in overlay])
    # last occurrence of each row wins
    rev_unique, rev_pos = np.unique(idx[::-1], return_index=True)
    pos = len(idx) - 1 - rev_pos
    idx, vals = rev_unique, vals[pos]
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    out = []
    for s, e in zip(np.r_[0, breaks], np.r_[breaks, len(idx)]):
        out.append((int(idx[s]), int(idx[e - 1]) + 1, vals[s:e]))
    return out


def _read_rows(ds, sorted_unique_rows: np.ndarray) -> np.ndarray:
    """Rows of a 2-D dataset, read as contiguous runs (h5py point selections are slow)."""
    rows = sorted_unique_rows
    out = np.empty((len(rows), ds.shape[1]), dtype=ds.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for s, e in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
        out[s:e] = ds[int(rows[s]): int(rows[e - 1]) + 1]
    return out


_MAX_FIXED = 4096  # bytes; longer strings are stored variable-length


def _write_manifest(f, df: pd.DataFrame) -> None:
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
        null = np.array([_null(v) or v is pd.NA for v in vals], dtype=bool)
        raw = [b"" if n else str(v).encode("utf-8") for v, n in zip(vals, null)]
        longest = max((len(b) for b in raw), default=1) or 1
        if longest <= _MAX_FIXED:
            fixed = h5py.string_dtype("utf-8", longest)
            ds = g.create_dataset(col, data=np.array(raw, dtype=fixed), dtype=fixed)
        else:
            ds = g.create_dataset(col, data=np.array([b.decode() for b in raw], dtype=object),
                                  dtype=h5py.string_dtype())
        ds.attrs["kind"] = "str"
        if null.any():
            g.create_dataset(f"{col}.null", data=null)


def _read_manifest(f, names: list[str] | None = None) -> pd.DataFrame | None:
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
