"""``merge`` does not depend on the order of its shards (issue 24): a shard whose rows reached its
journal but whose feature names never reached a checkpoint (its worker was killed in between)
reports placeholders ``nss_0 ...``; the real names of another shard win, in either order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features_store import FeatureStore, StoreError
from features_store.manifest import Manifest
from features_store.merge import merge
from ray_helpers import store_content

KEY = "nss-0123456789ab"
IDENTITY = {"name": "nss", "version": 1}
REAL = [f"mscn_{i}" for i in range(3)]


def _manifest(tmp_path) -> Manifest:
    df = pd.DataFrame({"item_id": [f"i{k}" for k in range(6)], "path": [""] * 6, "prompt": ["p"] * 6,
                       "generator": ["g"] * 6})
    return Manifest(df, tmp_path, "toy")


def _shard(path, manifest, rows, names) -> str:
    """A shard store holding ``rows``; ``names=None``: rows journaled, names lost with the worker."""
    with FeatureStore(path, mode="a") as st:
        st.set_manifest(manifest)
        st.ensure_config(KEY, IDENTITY, feature_names=names, name="nss", kind="image")
        st.record(KEY, rows, np.arange(len(rows) * 3, dtype=np.float32).reshape(-1, 3) + rows[0])
    return str(path)


def test_real_feature_names_win_over_placeholders_in_either_order(tmp_path):
    m = _manifest(tmp_path)
    named = _shard(tmp_path / "a.h5", m, np.array([0, 1, 2]), REAL)
    unnamed = _shard(tmp_path / "b.h5", m, np.array([3, 4, 5]), None)
    with FeatureStore(unnamed, mode="r") as st:
        assert st.feature_names(KEY) == ["nss_0", "nss_1", "nss_2"]  # the placeholder the issue met
    merge(tmp_path / "ab.h5", [named, unnamed])
    merge(tmp_path / "ba.h5", [unnamed, named])
    ab, ba = store_content(tmp_path / "ab.h5"), store_content(tmp_path / "ba.h5")
    assert ab[KEY]["names"] == REAL
    assert ab == ba
    # merged into a store that already holds the key with placeholder names: the real ones replace them
    merge(tmp_path / "later.h5", [unnamed])
    merge(tmp_path / "later.h5", [named])
    assert store_content(tmp_path / "later.h5")[KEY]["names"] == REAL


def test_shards_naming_features_differently_are_refused(tmp_path):
    m = _manifest(tmp_path)
    a = _shard(tmp_path / "a.h5", m, np.array([0, 1, 2]), REAL)
    b = _shard(tmp_path / "b.h5", m, np.array([3, 4, 5]), ["x", "y", "z"])
    with pytest.raises(StoreError, match="name its features differently .feature 0 is 'mscn_0' in .*a.h5, 'x' in"):
        merge(tmp_path / "out.h5", [a, b])
