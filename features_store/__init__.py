"""Manifests (datasets as tables of items) and the HDF5 feature store.

    from features_store import load_dataset, FeatureStore, load_features
    m = load_dataset("../shared/data/aigiqa20k")
    X, y, ids, groups = load_features("stores/aigiqa20k-image.h5", ["generator", "prompt_minilm"])

Names are imported on first use, so command-line tools that only parse arguments stay fast.
"""
from __future__ import annotations

import importlib

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
