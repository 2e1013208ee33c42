"""Manifests (datasets as tables of items) and the HDF5 feature store.

    from features_store import load_dataset, FeatureStore, load_features
    m = load_dataset("../shared/data/aigiqa20k")
    X, y, ids, groups = load_features("runs/demo/demo.h5", ["generator", "nss"])   # the store `make demo` writes

Names are imported on first use, so command-line tools that only parse arguments stay fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lazy exports below, as import statements: import-linter sees these arrows
    from .adapters import load_dataset
    from .api import load_features, load_frame, resolve_keys
    from .manifest import Manifest, ManifestError, Problem
    from .store import FeatureStore, IdentityMismatch, StoreError

_EXPORTS = {
    "load_features": "api", "load_frame": "api", "resolve_keys": "api",
    "Manifest": "manifest", "ManifestError": "manifest", "Problem": "manifest", "load_dataset": "adapters",
    "FeatureStore": "store", "IdentityMismatch": "store", "StoreError": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
