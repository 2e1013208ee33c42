"""Writing the store file: a checkpoint folds the journal into a copy of the file and swaps it in.

The ``.h5`` file is never modified in place. A checkpoint copies it, patches the copy with h5py,
fsyncs and ``os.replace``s it, so ``kill -9`` at any moment leaves either the old or the new file,
never a half-written one; only then are the folded journal files deleted. A rewrite (creation, or
a grown manifest) writes the whole file anew the same way.

:class:`Checkpoints` is the writing half of :class:`features_store.store.FeatureStore` (a base
class of it); it uses the store's state (``meta``, ``_configs``, ``_h5``, ``_applied``, ``df``,
``feature_names``, ``_file_errors``) and owns nothing else.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import journal
from .errors import StoreError, write_error
from .fingerprint import write_group
from .layout import DONE, FAILED, FORMAT_VERSION, KeyConfig, now, write_manifest

BLOCK_ROWS = 8192  # rows copied at a time when a rewrite moves value arrays


class Checkpoints:
    """Writing the file: :meth:`checkpoint` folds what was recorded since into a copy and swaps it in."""

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
                write_manifest(f, self.df)
                for cfg in self._configs.values():
                    self._write_config(f, cfg, fresh=True)
            self._swap_in(tmp)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _tmp_path(self) -> Path:
        return self.real_path.with_name(f".{self.real_path.name}.tmp-{os.getpid()}")

    def _write_meta(self, f) -> None:
        self.meta.setdefault("created", now())
        self.meta.update({"format_version": FORMAT_VERSION, "dtype": str(self.dtype), "updated": now()})
        self.meta.setdefault("shard", "")
        for k, v in self.meta.items():  # manifest *content* changes always go through _rewrite
            f.attrs[k] = v
        write_group(self, f)

    def _write_config(self, f, cfg: KeyConfig, fresh: bool) -> None:
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
                    for a in range(0, src.shape[0], BLOCK_ROWS):
                        b = min(a + BLOCK_ROWS, src.shape[0])
                        ds[a:b] = src[a:b]
            ds = g["values"]
            for a, b, vals in overlay_runs(cfg.overlay):
                ds[a:b] = vals
            names = self.feature_names(cfg.key)
            if "feature_names" in g and list(g["feature_names"].asstr()[...]) != names:
                del g["feature_names"]
            if "feature_names" not in g:
                g.create_dataset("feature_names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        cfg.attrs.update({"dim": cfg.dim, "updated": now(), "done": int((cfg.status == DONE).sum()),
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


def overlay_runs(overlay: list[tuple[np.ndarray, np.ndarray]]):
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
