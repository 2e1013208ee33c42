"""The HDF5 feature store: layout, journal, identities, growth, dtype, merge, notebook API."""
from __future__ import annotations

import json
import os
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from extractors.base import config_hash
from features_store import FeatureStore, IdentityMismatch, StoreError, load_features, load_frame
from features_store.__main__ import main as fs_main
from features_store.manifest import Manifest
from features_store.merge import merge


def manifest(n=10, start=0, prompt="p", name="toy"):
    ids = [f"item{i:03d}.png" for i in range(start, start + n)]
    df = pd.DataFrame({
        "item_id": ids, "path": ids, "prompt": [f"{prompt} {i}" for i in range(start, start + n)],
        "generator": ["g1" if i % 2 else "g2" for i in range(start, start + n)],
        "mos": [float(i) if i % 3 else np.nan for i in range(start, start + n)],
        "split": ["train" if i % 3 else "test" for i in range(start, start + n)],
    })
    return Manifest(df, "/data", name)


def ident(name="fake", **opts):
    return {"name": name, "options": opts, "version": "1"}


def key_of(identity):
    return f"{identity['name']}-{config_hash(identity)}"


def vals(rows, d=4):
    rows = np.asarray(rows, dtype=np.float32)[:, None]
    return rows * 10 + np.arange(d, dtype=np.float32)


@pytest.fixture
def store(tmp_path):
    return tmp_path / "s.h5"


def test_write_read_layout_and_identity_attrs(store):
    i = ident(size=2)
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        st.ensure_config(k, i, feature_names=[f"f{j}" for j in range(4)], kind="meta")
        st.write(k, [0, 1, 2], vals([0, 1, 2]))
        st.fail(k, [3], ["ItemError: broken file"])
        assert list(st.pending(k)) == [3, 4, 5, 6, 7, 8, 9] and list(st.pending(k, retry_failed=False))[0] == 4
    with h5py.File(store, "r") as f:  # what h5ls/h5dump show
        g = f["features"][k]
        assert json.loads(g.attrs["identity"]) == i and g.attrs["dim"] == 4 and g.attrs["dtype"] == "float32"
        assert g["values"].shape == (10, 4) and g["values"].chunks is None  # contiguous: fast full reads
        assert list(g["status"][:5]) == [1, 1, 1, 2, 0]
        assert g["errors"].asstr()[3] == "ItemError: broken file"
        assert list(f["manifest"]["item_id"].asstr()[:2]) == ["item000.png", "item001.png"]
    with FeatureStore(store, "r") as st:
        x = st.read(k)
        np.testing.assert_array_equal(x[:3], vals([0, 1, 2]))
        assert np.isnan(x[3:]).all()
        np.testing.assert_array_equal(st.read(k, [2, 0]), vals([2, 0]))
        assert st.errors(k)["item_id"].tolist() == ["item003.png"]
        assert st.feature_names(k) == ["f0", "f1", "f2", "f3"]
        assert st.df["generator"].iat[0] == "g2" and np.isnan(st.df["mos"].iat[0])


def test_journal_is_seen_by_readers_and_replayed_after_a_crash(store):
    i = ident()
    k = key_of(i)
    st = FeatureStore(store)
    st.set_manifest(manifest())
    st.ensure_config(k, i)
    st.write(k, [4, 5], vals([4, 5]))
    st.fail(k, [6], ["boom"])
    # a reader sees the journal without any checkpoint
    with FeatureStore(store, "r") as r:
        np.testing.assert_array_equal(r.read(k, [4, 5]), vals([4, 5]))
        assert r.counts(k) == {"done": 2, "failed": 1, "pending": 7}
    # the writer "dies" (no checkpoint, lock released as the kernel would)
    st._close_h5()
    os.close(st._lock_fd)
    st._lock_fd = None
    with FeatureStore(store) as st2:
        assert st2.counts(k) == {"done": 2, "failed": 1, "pending": 7}
        st2.write(k, [6], vals([6]))  # a retry succeeds: its error is cleared
    assert not [p for p in os.listdir(f"{store}.journal") if p.endswith(".npz")]  # folded
    with FeatureStore(store, "r") as r:
        assert r.counts(k)["done"] == 3 and r.errors(k).empty


def test_crash_inside_checkpoint_leaves_old_file_and_journal(store, monkeypatch):
    i = ident()
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        st.ensure_config(k, i)
        st.write(k, [0], vals([0]))
    st = FeatureStore(store)
    st.write(k, [1, 2], vals([1, 2]))

    def die(*a, **kw):
        raise KeyboardInterrupt("killed during checkpoint")

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        st.checkpoint()
    monkeypatch.undo()
    st.close(checkpoint=False)
    with h5py.File(store, "r") as f:  # the old file is intact
        assert list(f["features"][k]["status"][:3]) == [1, 0, 0]
    with FeatureStore(store, "r") as r:  # and the journal still carries the rows
        np.testing.assert_array_equal(r.read(k, [0, 1, 2]), vals([0, 1, 2]))
    assert not [p for p in os.listdir(store.parent) if ".tmp-" in p]  # no temporary left behind


def test_identity_refused_and_configs_side_by_side(store):
    a, b = ident(size=1), ident(size=2)
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        st.ensure_config(key_of(a), a)
        st.ensure_config(key_of(b), b)
        st.write(key_of(a), [0], vals([0], d=2))
        st.write(key_of(b), [0], vals([0], d=3))
        with pytest.raises(IdentityMismatch, match="different identity"):
            st.ensure_config(key_of(a), b)
        with pytest.raises(StoreError, match="width 5.*width 2"):
            st.write(key_of(a), [1], vals([1], d=5))
    with FeatureStore(store, "r") as st:
        assert sorted(st.keys()) == sorted([key_of(a), key_of(b)])
        assert st.read(key_of(a)).shape == (10, 2) and st.read(key_of(b)).shape == (10, 3)


def test_manifest_grows_keeping_rows_and_refuses_changed_inputs(store):
    i = ident()
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest(10))
        st.ensure_config(k, i)
        st.write(k, range(10), vals(range(10)))
    with FeatureStore(store) as st:
        assert st.set_manifest(manifest(10)) == 0
        assert st.set_manifest(manifest(15)) == 5  # same first ten + five new
        assert list(st.pending(k)) == [10, 11, 12, 13, 14]
        st.write(k, [12], vals([12]))
    with FeatureStore(store, "r") as st:
        x = st.read(k)
        np.testing.assert_array_equal(x[:10], vals(range(10)))
        np.testing.assert_array_equal(x[12], vals([12])[0])
        assert np.isnan(x[[10, 11, 13, 14]]).all() and len(st) == 15
    with FeatureStore(store) as st:
        with pytest.raises(StoreError, match="item000.png: prompt 'p 0' -> 'q 0'"):
            st.set_manifest(manifest(3, prompt="q"))


def test_labels_update_without_touching_features(store):
    i = ident()
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest(4))
        st.ensure_config(k, i)
        st.write(k, [0, 1], vals([0, 1]))
    m = manifest(4)
    m.df.loc[0, "mos"] = 42.0
    with FeatureStore(store) as st:
        st.set_manifest(m)
    with FeatureStore(store, "r") as st:
        assert st.df["mos"].iat[0] == 42.0 and st.counts(k)["done"] == 2


def test_float16_option_and_no_mixing(store):
    i = ident()
    k = key_of(i)
    with FeatureStore(store, dtype="float16") as st:
        st.set_manifest(manifest())
        st.ensure_config(k, i)
        st.write(k, [0], np.array([[1 / 3, 2, 3, 4]], np.float32))
    with FeatureStore(store, "r") as st:
        assert st.dtype == np.float16 and st.read(k, dtype=None).dtype == np.float16
        assert st.read(k)[0, 0] == np.float32(np.float16(1 / 3))
    with pytest.raises(StoreError, match="float16.*refused"):
        FeatureStore(store, dtype="float32")


def test_one_writer_at_a_time(store):
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        with pytest.raises(StoreError, match="another process"):
            FeatureStore(store)
        FeatureStore(store, "r").close()  # readers are welcome


def test_unreadable_journal_file_is_discarded(store):
    i = ident()
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        st.ensure_config(k, i)
    (store.parent / "s.h5.journal" / "0000000007.npz").write_bytes(b"")  # as after a power cut
    with pytest.warns(UserWarning, match="unreadable journal"):
        with FeatureStore(store) as st:
            assert st.counts(k)["done"] == 0


def _fill(path, rows, i, value_of=vals, shard=None, n=10):
    k = key_of(i)
    with FeatureStore(path) as st:
        st.set_manifest(manifest(n))
        st.set_shard(shard)
        st.ensure_config(k, i)
        st.write(k, rows, value_of(rows))
    return k


def test_merge_shards(tmp_path):
    i = ident()
    k = _fill(tmp_path / "a.h5", [0, 2, 4, 6, 8], i, shard=(0, 2))
    _fill(tmp_path / "b.h5", [1, 3, 5, 7, 9], i, shard=(1, 2))
    report = merge(tmp_path / "all.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
    assert report["keys"][k] == {"done": 10, "failed": 0, "pending": 0}
    with FeatureStore(tmp_path / "all.h5", "r") as st:
        np.testing.assert_array_equal(st.read(k), vals(range(10)))
    with pytest.raises(StoreError, match=r"shard\(s\) \[1\] of 2 missing"):
        merge(tmp_path / "x.h5", [tmp_path / "a.h5"])


def test_merge_refuses_conflicts(tmp_path):
    i = ident()
    _fill(tmp_path / "a.h5", [0, 1], i)
    _fill(tmp_path / "b.h5", [1, 2], i, value_of=lambda r: vals(r) + 1)
    with pytest.raises(StoreError, match="item001.png.*different values"):
        merge(tmp_path / "x.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
    other = {**i, "version": "2"}
    with FeatureStore(tmp_path / "c.h5") as st:  # same key, other identity (forged)
        st.set_manifest(manifest())
        st._configs  # noqa: B018
        st.ensure_config(key_of(i), i)
    with FeatureStore(tmp_path / "c.h5") as st:
        st._configs[key_of(i)].attrs["identity"] = json.dumps(other)
        st._configs[key_of(i)].dirty = True
    with pytest.raises(IdentityMismatch):
        merge(tmp_path / "y.h5", [tmp_path / "a.h5", tmp_path / "c.h5"])


def test_load_features_and_frame(store):
    a, b, b2 = ident("alpha"), ident("beta", x=1), ident("beta", x=2)
    with FeatureStore(store) as st:
        st.set_manifest(manifest(9))
        for i in (a, b, b2):
            st.ensure_config(key_of(i), i)
        st.write(key_of(a), range(9), vals(range(9), d=2))
        st.write(key_of(b), range(9), vals(range(9), d=3))
        st.fail(key_of(b), [4], ["bad"])
    train = [1, 2, 4, 5, 7, 8]
    with pytest.warns(UserWarning, match="1 of 6 items are not done"):
        X, y, ids, groups = load_features(store, ["alpha", key_of(b)], split="train")
    keep = [r for r in train if r != 4]
    assert X.shape == (5, 5) and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, :2], vals(keep, d=2))
    np.testing.assert_array_equal(y, [float(r) for r in keep])
    assert list(ids) == [f"item{r:03d}.png" for r in keep] and groups[0] == "p 1"
    with pytest.raises(StoreError, match="not done"):
        load_features(store, ["alpha", key_of(b)], incomplete="raise")
    with pytest.raises(KeyError, match="2 configurations of 'beta'"):
        load_features(store, ["beta"])
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        load_features(store, ["alpah"])
    with pytest.raises(ValueError, match="no item of split 'test' has a 'mos' label.*target=None"):
        load_features(store, "alpha", split="test")
    Xt, yt, _, _ = load_features(store, "alpha", split="test", target=None)
    wrapped = {"name": "frames.gamma", "options": {}}
    with FeatureStore(store) as st:
        st.ensure_config(key_of(wrapped), wrapped, name="frames")
        st.write(key_of(wrapped), range(9), vals(range(9), d=1))
    # an image extractor run over video frames is found by its base name too
    assert load_features(store, "gamma", split="test", target=None)[0].shape == (3, 1)
    assert load_features(store, "frames", split="test", target=None)[0].shape == (3, 1)
    assert Xt.shape == (3, 2) and yt is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_frame(store, ["alpha", key_of(b)])
    assert list(df.columns[:6]) == ["item_id", "split", "group", "generator", "prompt", "mos"]
    assert "alpha_0" in df and "beta_2" in df and len(df) == 5


def test_info_and_errors_cli(store, capsys):
    i = ident()
    k = key_of(i)
    with FeatureStore(store) as st:
        st.set_manifest(manifest())
        st.ensure_config(k, i)
        st.write(k, [0], vals([0]))
        st.fail(k, [1], ["ItemError: cannot decode image"])
    assert fs_main(["info", str(store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["keys"][k] == {"name": "fake", "dim": 4, "done": 1, "failed": 1, "pending": 8}
    assert fs_main(["errors", str(store), "fake"]) == 0
    assert "item001.png\tItemError: cannot decode image" in capsys.readouterr().out
    assert fs_main(["errors", str(store), "nope"]) == 2
