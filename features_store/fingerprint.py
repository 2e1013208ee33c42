"""Media fingerprints: features computed from a file that has changed since are not reused.

A store records per item the size, mtime (ns) and sha256 of its media file (``/media/size``,
``/media/mtime_ns``, ``/media/sha256``; -1 / "" where unknown). Before an image/video extractor
runs, :func:`check_media` stats the run's items (one ``os.stat`` each: a cached rerun over
20,000 items stays well under a second) and compares:

* same size and mtime: the file is taken as unchanged (nothing is read);
* size or mtime differ: the file is hashed; the same sha256 (a ``touch``, a copy keeping the
  bytes) only updates the record; another one means the media changed: the item's rows of
  every image/video key become pending again (``on_changed="recompute"``, with a warning
  naming the items) or the run is refused (``on_changed="refuse"``);
* nothing recorded yet (a new item, or a store made before fingerprints): the file is hashed
  and recorded, and rows already there are kept (nothing to compare them with).

Invalidation and the new record are written in one checkpoint before anything is computed,
so a kill at any point leaves either the old record (the change is found again) or the new
one with the rows pending. Meta and text keys (generator, prompt_minilm) do not read the
media and are left alone. A file rewritten within the same mtime tick and with the same
size is not noticed; hashing every file on every run would cost a full read of the dataset.

Commands that only read features (regress, predict) use :func:`changed_media`: the same stat
against the record, without hashing or writing, so a ``touch`` counts as a change there (the
features run tells it apart and records the new mtime).
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import StoreError
from .layout import DONE, FAILED, PENDING
from .manifest import media_path

MEDIA_KINDS = ("image", "video")
_HASH_THREADS = 4  # hashlib releases the GIL: reading and hashing overlap


def fingerprints(st) -> dict[str, np.ndarray]:
    """The store's record, one entry per item (size -1 / sha256 "" where unknown). Do not modify."""
    n = len(st)
    media = st._media
    if media is None:
        media = {"size": np.full(n, -1, np.int64), "mtime_ns": np.full(n, -1, np.int64),
                 "sha256": np.full(n, "", dtype=object)}
        f = st._h5
        if f is not None and "media" in f:
            g = f["media"]
            m = min(n, g["size"].shape[0])
            media["size"][:m] = g["size"][:m]
            media["mtime_ns"][:m] = g["mtime_ns"][:m]
            media["sha256"][:m] = [b.decode() for b in g["sha256"][:m].tolist()]
        st._media = media
    if len(media["size"]) < n:  # the manifest grew: new items are unknown
        k = n - len(media["size"])
        media["size"] = np.r_[media["size"], np.full(k, -1, np.int64)]
        media["mtime_ns"] = np.r_[media["mtime_ns"], np.full(k, -1, np.int64)]
        media["sha256"] = np.r_[media["sha256"], np.full(k, "", dtype=object)]
    return media


def write_group(st, f) -> None:
    """Write ``/media`` into the file being checkpointed (``f``) when it changed or is a fresh file."""
    fresh = "media" not in f
    if not (st._media_dirty or (fresh and (st._media is not None or (st._h5 is not None and "media" in st._h5)))):
        return
    if st._n is None:
        return
    media = fingerprints(st)
    if not fresh:
        del f["media"]
    g = f.create_group("media")
    g.create_dataset("size", data=media["size"])
    g.create_dataset("mtime_ns", data=media["mtime_ns"])
    g.create_dataset("sha256", data=np.array([s.encode() for s in media["sha256"]], dtype="S64"))


def sha256_of(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def stat_all(paths: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(size, mtime_ns) per path; -1 where there is no path or it cannot be read."""
    size = np.full(len(paths), -1, np.int64)
    mtime = np.full(len(paths), -1, np.int64)
    for k, p in enumerate(paths):
        if p:
            try:
                s = os.stat(p)
            except OSError:
                continue
            size[k], mtime[k] = s.st_size, s.st_mtime_ns
    return size, mtime


@dataclass
class _Stat:
    """One ``stat`` of the files of some store rows, next to the store's record of them."""

    size: np.ndarray
    mtime: np.ndarray
    present: np.ndarray  # the file could be stat'ed
    known: np.ndarray  # the store records a fingerprint for the item
    moved: np.ndarray  # present and known, but size or mtime differ from the record


def _stat_against_record(st, paths: Sequence[str | None], rows: np.ndarray) -> _Stat:
    size, mtime = stat_all(paths)
    media = fingerprints(st)
    old_size, old_mtime = media["size"][rows], media["mtime_ns"][rows]
    present, known = size >= 0, old_size >= 0
    moved = present & known & ((old_size != size) | (old_mtime != mtime))
    return _Stat(size, mtime, present, known, moved)


def check_media(st, paths: Sequence[str | None], rows: np.ndarray, on_changed: str = "recompute") -> list[str]:
    """Compare the media of store ``rows`` (files ``paths``) with the record; returns the ids of
    items whose media changed after features were computed from them (see the module doc)."""
    if on_changed not in ("recompute", "refuse"):
        raise ValueError(f"on_changed must be 'recompute' or 'refuse', got {on_changed!r}")
    rows = np.asarray(rows, np.int64)
    s = _stat_against_record(st, paths, rows)
    size, mtime, moved = s.size, s.mtime, s.moved
    new = s.present & ~s.known
    if not new.any() and not moved.any():  # the cached path: stats only
        return []
    media = fingerprints(st)
    look = np.flatnonzero(new | moved)
    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        sha = np.array(list(pool.map(sha256_of, [paths[k] for k in look])), dtype=object)
    digest = np.full(len(rows), "", dtype=object)
    digest[look] = sha
    old_sha = media["sha256"][rows]
    changed = moved & ((old_sha == "") | (old_sha != digest))
    mkeys = media_keys(st, st.keys())
    stale = changed & _computed(st, mkeys, rows, with_failed=True)
    if stale.any() and on_changed == "refuse":
        raise StoreError(f"{st.path}: media of {int(stale.sum())} item(s) changed since their features were computed "
                         f"({_names(st, rows[stale])}); rerun with --on-changed recompute to recompute them, "
                         "or restore the files")
    st._need_write()
    upd = rows[look]
    media["size"][upd], media["mtime_ns"][upd], media["sha256"][upd] = size[look], mtime[look], sha
    for k in mkeys:
        cfg = st._configs[k]
        r = rows[stale]
        r = r[cfg.status[r] != PENDING]
        if not len(r):
            continue
        if cfg.dim:
            cfg.overlay.append((r, np.full((len(r), cfg.dim), np.nan, st.dtype)))
        for i in r[cfg.status[r] == FAILED]:
            cfg.err_overlay[int(i)] = ""
        cfg.status[r] = PENDING
        cfg.dirty = True
    st._media_dirty = st._meta_dirty = True
    st.checkpoint()  # record and invalidation land together, before anything is computed
    if stale.any():
        print(f"warning: media of {int(stale.sum())} item(s) changed since their features were computed; "
              f"recomputing them ({_names(st, rows[stale])})", file=sys.stderr)
    return [str(i) for i in st.item_ids()[rows[stale]]]


@dataclass
class MediaDrift:
    """What :func:`changed_media` found among ``checked`` items (those with a record): the ids of
    items whose file differs from the record by size or mtime (``changed``) or is gone (``missing``)."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    checked: int = 0

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing)


def changed_media(st, keys: Sequence[str], rows: np.ndarray | None = None) -> MediaDrift:
    """For commands that read features without computing them (regress, predict): the items of store
    ``rows`` (default all) whose image/video features under ``keys`` were computed from a file that
    has changed since, as far as one ``stat`` per item tells.

    Nothing is hashed or written (the store may be read-only), so a ``touch`` alone counts as a
    change here: the features run hashes, recomputes what really changed and records the new mtime.
    Items without a record are not checked: label-only stores (no image/video key among ``keys``),
    stores made before fingerprints, items never computed from their media."""
    rows = np.arange(len(st), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    keys = media_keys(st, keys)
    if not keys or not len(rows):
        return MediaDrift()
    rows = rows[_computed(st, keys, rows) & (fingerprints(st)["size"][rows] >= 0)]
    if not len(rows):
        return MediaDrift()
    s = _stat_against_record(st, media_paths(st, rows), rows)
    ids = st.item_ids()
    return MediaDrift(changed=[str(i) for i in ids[rows[s.moved]]], missing=[str(i) for i in ids[rows[~s.present]]],
                      checked=len(rows))


def media_paths(st, rows: np.ndarray) -> list[str | None]:
    """The media files of store ``rows``, as the store's manifest locates them (its root + path)."""
    root = st.meta.get("root", "")
    return [media_path(root, rel) for rel in st.columns(["path"])["path"].to_numpy(dtype=object)[rows]]


def media_keys(st, keys: Sequence[str]) -> list[str]:
    """The keys whose features are computed from the media (meta and text keys never read it)."""
    return [k for k in keys if st._configs[k].attrs.get("kind") in MEDIA_KINDS]


def _computed(st, keys: Sequence[str], rows: np.ndarray, with_failed: bool = False) -> np.ndarray:
    """Per row: whether any of ``keys`` holds a result for it (done; or failed, with ``with_failed``)."""
    states = (DONE, FAILED) if with_failed else (DONE,)
    out = np.zeros(len(rows), bool)
    for k in keys:
        out |= np.isin(st.status(k)[rows], states)
    return out


def _names(st, rows: np.ndarray, limit: int = 10) -> str:
    ids = [str(i) for i in st.item_ids()[rows[:limit]]]
    return ", ".join(ids) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def carry(dst, src, dst_rows: np.ndarray) -> None:
    """Merge: take ``src``'s record for items ``dst`` has none for (``dst_rows[i]`` is src row i)."""
    if src._h5 is None or "media" not in src._h5:
        return
    a, b = fingerprints(src), fingerprints(dst)
    take = (a["size"] >= 0) & (b["size"][dst_rows] < 0)
    if take.any():
        for f in ("size", "mtime_ns", "sha256"):
            b[f][dst_rows[take]] = a[f][take]
        dst._media_dirty = dst._meta_dirty = True
