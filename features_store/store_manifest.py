"""The manifest table a store holds: its items, created once and extended, never changed under
stored features; and the dataset (name, source, id) they come from.

:class:`StoreManifest` is that half of :class:`features_store.store.FeatureStore` (a base class
of it); creating or growing the table rewrites the file through the store's ``_rewrite``
(:mod:`features_store.checkpoint`).
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import StoreError
from .layout import read_manifest
from .manifest import INPUT_COLUMNS, Manifest
from .naming import dataset_id, dataset_source


class StoreManifest:
    """The stored manifest: its rows (``df``, ``item_ids``, ``index_of``), extending it
    (``set_manifest``), and the dataset and shard it records."""

    def __len__(self) -> int:
        return self._n or 0

    @property
    def df(self) -> pd.DataFrame:
        """The stored manifest table (do not modify)."""
        if self._n is None:
            raise StoreError(f"{self.path} has no manifest yet")
        if self._df is None:
            self._df = read_manifest(self._h5)
        return self._df

    def columns(self, names: list[str]) -> pd.DataFrame:
        """Some manifest columns only (cheaper than ``df`` on a large store)."""
        if self._df is not None or self._n is None:
            return self.df[names]
        return read_manifest(self._h5, names)

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
        m.label_aliases = json.loads(self.meta.get("label_aliases", "{}"))
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
                diff = np.flatnonzero(~same_values(a, b))
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
            if not added and frames_equal(old, merged):
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
        return not all(same_values(old[c].to_numpy(dtype=object)[rows], new[c].to_numpy(dtype=object)).all()
                       for c in new.columns)

    def dataset(self) -> dict[str, str]:
        """The dataset this store holds: name, source (folder / label file), dataset_id."""
        return {k: str(self.meta.get(k, "")) for k in ("name", "source", "dataset_id", "root")}

    def _check_dataset(self, manifest: Manifest, added: int) -> None:
        """Items of another dataset are never added to a store (its train split would hold foreign rows).
        The same items under a new source (a moved folder) are accepted."""
        have = self.meta.get("dataset_id")
        if added and have and have != dataset_id(manifest):
            raise StoreError(
                f"{self.path} holds dataset {self.meta.get('name')!r} from {self.meta.get('source') or self.meta.get('root')} "
                f"(id {have}); {manifest.name!r} from {dataset_source(manifest)} (id {dataset_id(manifest)}) would add "
                f"{added} items to it. Use another store (the default store name identifies the dataset).")

    def _update_meta(self, manifest: Manifest) -> None:
        labels = sorted(set(json.loads(self.meta.get("labels", "[]"))) | set(manifest.labels))
        meta = {"name": manifest.name, "root": manifest.root, "adapter": manifest.adapter,
                "labels": json.dumps(labels), "source": dataset_source(manifest), "dataset_id": dataset_id(manifest)}
        aliases = {**json.loads(self.meta.get("label_aliases", "{}")), **manifest.label_aliases}
        if aliases:  # the file's names of labels (--target accepts them; features_store.api.resolve_target)
            meta["label_aliases"] = json.dumps(aliases, sort_keys=True)
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


def same_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise: equal, or both missing (None/NaN). One vectorised pass, no Python loop."""
    x, y = np.asarray(x, dtype=object), np.asarray(y, dtype=object)
    eq = np.equal(x, y).astype(bool) if len(x) else np.zeros(0, bool)
    return eq | (pd.isna(x) & pd.isna(y))


def frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all(same_values(a[c].to_numpy(dtype=object), b[c].to_numpy(dtype=object)).all() for c in a.columns)
