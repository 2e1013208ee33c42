"""Default store names that identify the dataset, and the dataset identity stores record.

Two datasets whose folders (or label files) share a name used to default to the same
``stores/<name>-<track>.h5`` and be mixed in it. The default is now
``stores/<name>-<track>-<8 hex>.h5``, the hex a hash of the dataset's *source*: the resolved
dataset folder, label file or YAML description it was loaded from (the manifest root when
the source is unknown). Stores record the same identity (``dataset_id``, ``source``), and
``features_store merge`` refuses stores of different datasets.

Every entry point (``aigcq``, ``python -m extractors run``, ``experiments.reproduce``) uses
:func:`find_default_store`, so a store made under the earlier name keeps being used when its
recorded dataset matches.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

STORES = Path("stores")


def dataset_source(manifest) -> str:
    """What identifies a dataset: the resolved folder / label file / YAML it was loaded from."""
    src = getattr(manifest, "source", "") or getattr(manifest, "root", "") or ""
    return os.path.realpath(src) if src else ""


def dataset_id(manifest_or_source) -> str:
    """8 hex digits of the sha256 of the dataset source (a manifest, or a source path string)."""
    src = manifest_or_source if isinstance(manifest_or_source, str) else dataset_source(manifest_or_source)
    return hashlib.sha256(src.encode("utf-8")).hexdigest()[:8]


def default_store_path(manifest, track: str) -> Path:
    """``stores/<name>-<track>-<dataset id>.h5`` (relative to the working directory)."""
    return STORES / f"{manifest.name}-{track}-{dataset_id(manifest)}.h5"


def legacy_store_path(manifest, track: str) -> Path:
    """The name used before the dataset identity was part of it."""
    return STORES / f"{manifest.name}-{track}.h5"


def stored_dataset(path: str | os.PathLike) -> dict[str, str]:
    """The dataset a store file records (``dataset_id``, ``source``, ``root``, ``name``; "" if absent).
    Reads the file's attributes only (no journal, no lock)."""
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    return {k: attrs.get(k, "") for k in ("dataset_id", "source", "root", "name")}


def same_dataset(recorded: dict[str, str], manifest) -> bool:
    """Whether a store's recorded dataset is ``manifest``'s. Stores made before the identity was
    recorded are matched by their manifest root (and name)."""
    if recorded.get("dataset_id"):
        return recorded["dataset_id"] == dataset_id(manifest)
    return bool(recorded.get("root")) and os.path.realpath(recorded["root"]) == os.path.realpath(manifest.root) \
        and recorded.get("name", manifest.name) == manifest.name


def find_default_store(manifest, track: str) -> tuple[Path, str | None]:
    """(store path, note or None). The new default name, unless only a store under the earlier
    name exists and records this dataset: then that one, with a note saying so."""
    new = default_store_path(manifest, track)
    old = legacy_store_path(manifest, track)
    if new.exists() or not old.is_file():
        return new, None
    try:
        recorded = stored_dataset(old)
    except OSError as err:  # unreadable: never reuse it silently
        return new, f"{old} (the earlier default name) cannot be read ({err}); using {new}"
    if same_dataset(recorded, manifest):
        return old, (f"using {old}, made under the earlier naming rule for this dataset; "
                     f"`mv {old} {new}` (and its .journal folder if any) adopts the new name")
    what = recorded.get("source") or recorded.get("root") or "another dataset"
    return new, f"{old} holds another dataset ({what}); using {new} for {dataset_source(manifest)}"
