"""The extraction runner and `python -m extractors`: incremental runs, per-item failures,
batch isolation, lazy setup, shards, workers, the CLI."""
from __future__ import annotations

import sys
import zlib

import numpy as np
import pandas as pd
import pytest

from extractors import registry
from extractors.__main__ import main as ex_main
from extractors.__main__ import split_specs
from extractors.base import Extractor, Item, ItemError
from extractors.runner import register_extractor, run_extraction, shard_path
from features_store import FeatureStore, load_dataset
from features_store.manifest import Manifest


def expected(item_id: str, dim: int = 3) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(item_id.encode())).standard_normal(dim).astype(np.float32)


class FakeMeta(Extractor):
    """Values from the item id; fails on request; counts setups."""

    name = "fake_meta"
    kind = "meta"
    defaults = {"dim": 3, "fail_prepare": [], "fail_compute": [], "nan": [], "always_fail": False}
    setups = 0

    def setup(self, device="cpu", precision="fp32"):
        super().setup(device, precision)
        type(self).setups += 1

    def prepare(self, item: Item):
        if item.item_id in self.options["fail_prepare"]:
            if item.item_id.endswith("3.png"):
                raise ItemError(f"bad item {item.item_id}")
            raise ValueError("weird")
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items):
        if self.options["always_fail"]:
            raise RuntimeError("model not loaded properly")
        if set(batch) & set(self.options["fail_compute"]):
            raise RuntimeError("compute exploded")
        out = np.stack([expected(i, self.options["dim"]) for i in batch])
        out[[i in self.options["nan"] for i in batch]] = np.nan
        return out


class FakeImage(Extractor):
    """Reads the media file (so missing files fail per item); runs in DataLoader workers."""

    name = "fake_image"
    kind = "image"
    defaults = {}

    def prepare(self, item: Item):
        from extractors.media import ItemError as _E  # same class, the way real extractors raise it

        try:
            with open(item.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise _E(f"file not found: {item.path}") from None
        return np.array([len(data), data[0], data[-1]], dtype=np.float32)

    def compute(self, batch, items):
        return np.asarray(batch) * 2


@pytest.fixture
def registered(monkeypatch):
    for cls in (FakeMeta, FakeImage):
        monkeypatch.setitem(registry.REGISTRY, cls.name, registry.REGISTRY.get(cls.name))
        monkeypatch.setitem(sys.modules, f"extractors._plugin_{cls.name}", None)
        register_extractor(cls, dim="3")
    FakeMeta.setups = 0
    yield


def toy(n=20, root="/nowhere", split=None):
    ids = [f"x{i:02d}3.png" if i == 3 else f"x{i:02d}.png" for i in range(n)]
    df = pd.DataFrame({"item_id": ids, "path": ids, "prompt": [f"p{i}" for i in range(n)],
                       "generator": [f"g{i % 3}" for i in range(n)], "mos": np.arange(n, dtype=float),
                       "split": split or ["train" if i < n - 4 else "test" for i in range(n)]})
    return Manifest(df, root, "toy")


def test_incremental_run_failures_and_lazy_setup(tmp_path):
    m, store = toy(), tmp_path / "s.h5"
    ids = list(m.df["item_id"])
    ex = FakeMeta(fail_prepare=[ids[3], ids[5]], fail_compute=[ids[9]], nan=[ids[11]])
    s = run_extraction(m, ex, store, batch_size=4, progress=False)
    assert (s.done, s.failed, s.skipped, FakeMeta.setups) == (16, 4, 0, 1)
    reasons = dict(s.failures)
    assert reasons[ids[3]] == f"bad item {ids[3]}"  # ItemError text verbatim
    assert reasons[ids[5]] == "ValueError: weird"
    assert reasons[ids[9]] == "RuntimeError: compute exploded"  # batch retried singly: only the culprit
    assert reasons[ids[11]].startswith("ValueError: non-finite")
    with FeatureStore(store, "r") as st:
        x = st.read(s.key)
        for r in (8, 10):  # batch-mates of the culprit were computed
            np.testing.assert_array_equal(x[r], expected(ids[r]))
        assert st.errors(s.key)["item_id"].tolist() == [ids[3], ids[5], ids[9], ids[11]]
    # rerun: only the failed items are retried (same options -> same key)
    s2 = run_extraction(m, FakeMeta(fail_prepare=[ids[3], ids[5]], fail_compute=[ids[9]], nan=[ids[11]]), store,
                        batch_size=4, progress=False, retry_failed=False)
    assert (s2.done, s2.failed, s2.skipped, FakeMeta.setups) == (0, 0, 20, 1)  # nothing pending: no setup


def test_retry_fills_holes_identically(tmp_path):
    m, store = toy(), tmp_path / "s.h5"
    ex = FakeMeta()
    key = ex.key()
    with FeatureStore(store) as st:  # a store where some rows failed before
        st.set_manifest(m)
        st.ensure_config(key, ex.identity())
        st.fail(key, [0, 1], ["old failure", "old failure"])
    s = run_extraction(m, FakeMeta(), store, batch_size=8, progress=False)
    assert (s.done, s.failed) == (20, 0)
    with FeatureStore(store, "r") as st:
        np.testing.assert_array_equal(st.read(key), np.stack([expected(i) for i in m.df["item_id"]]))
        assert st.errors(key).empty


def test_broken_extractor_stops_with_the_reason(tmp_path):
    with pytest.raises(RuntimeError, match="failed on every item.*model not loaded"):
        run_extraction(toy(40), FakeMeta(always_fail=True), tmp_path / "s.h5", batch_size=4, progress=False)


def test_split_items_and_generator_fit(tmp_path):
    m, store = toy(), tmp_path / "s.h5"
    from extractors.registry import get_extractor

    s = run_extraction(m, get_extractor("generator"), store, split="test", progress=False)
    assert (s.done, s.dim) == (4, 4)  # g0, g1, g2 (+ unknown) learnt from the whole manifest
    with FeatureStore(store, "r") as st:
        x = st.read(s.key)
        assert np.isnan(x[:16]).all()
        np.testing.assert_array_equal(x[16], [0, 1, 0, 0])  # item 16 -> g1
        assert st.feature_names(s.key)[0] == "generator=g0"
    items = m.items()[:5]  # a plain list of items works too
    s2 = run_extraction(items, FakeMeta(), tmp_path / "items.h5", progress=False)
    assert s2.done == 5


def test_media_extractor_with_workers_and_missing_files(tmp_path):
    for i in range(10):
        if i != 6:
            (tmp_path / f"x{i:02d}.png" if i != 3 else tmp_path / "x033.png").write_bytes(bytes([i + 1]) * (i + 2))
    m = toy(10, root=tmp_path)
    s = run_extraction(m, FakeImage(), tmp_path / "w.h5", workers=2, batch_size=3, progress=False)
    assert (s.done, s.failed) == (9, 1) and "file not found" in s.failures[0][1] and "x06.png" in s.failures[0][0]
    s0 = run_extraction(m, FakeImage(), tmp_path / "w0.h5", workers=0, batch_size=4, progress=False)
    with FeatureStore(tmp_path / "w.h5", "r") as a, FeatureStore(tmp_path / "w0.h5", "r") as b:
        np.testing.assert_array_equal(a.read(s.key), b.read(s0.key))
        np.testing.assert_array_equal(a.read(s.key)[2], [8, 6, 6])


def _csv(tmp_path, n=12):
    df = toy(n).df[["item_id", "prompt", "generator", "mos", "split"]]
    df.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_cli_run_shards_and_merge(tmp_path, capsys, registered):
    data = _csv(tmp_path)
    base = ["run", "--track", "image", "--data", str(data), "--extractors", "generator,fake_meta:dim=5",
            "--no-progress"]
    assert ex_main([*base, "--store", str(tmp_path / "full.h5")]) == 0
    out = capsys.readouterr().out
    assert "generator-" in out and "fake_meta-" in out and "12 computed" in out
    for k in range(3):
        assert ex_main([*base, "--store", str(tmp_path / "sh.h5"), "--shard", f"{k}/3"]) == 0
    shards = [shard_path(tmp_path / "sh.h5", (k, 3)) for k in range(3)]
    assert all(p.exists() for p in shards) and "4 computed" in capsys.readouterr().out
    from features_store.__main__ import main as fs_main

    assert fs_main(["merge", str(tmp_path / "merged.h5"), *map(str, shards)]) == 0
    with FeatureStore(tmp_path / "full.h5", "r") as a, FeatureStore(tmp_path / "merged.h5", "r") as b:
        assert a.keys() == b.keys() and len(a.keys()) == 2
        for k in a.keys():
            np.testing.assert_array_equal(a.read(k), b.read(k))
            assert b.counts(k)["done"] == 12


def test_cli_checks_media_only_for_media_extractors(tmp_path, capsys, registered):
    data = _csv(tmp_path, n=6)  # label file only: no media anywhere
    args = ["run", "--track", "image", "--data", str(data), "--store", str(tmp_path / "s.h5"), "--no-progress"]
    assert ex_main([*args, "--extractors", "generator"]) == 0
    assert ex_main([*args, "--extractors", "fake_image"]) == 2
    err = capsys.readouterr().err
    assert "6 invalid item(s)" in err and "x00.png (row 0): media file missing" in err
    assert ex_main([*args, "--extractors", "fake_image", "--on-invalid", "skip", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "0 computed, 6 failed" in out and "failed x00.png: file not found" in out
    assert (tmp_path / "s.h5.invalid.csv").exists()


def test_cli_list_and_spec_errors(capsys):
    assert ex_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "generator" in out and "meta" in out and "prompt_minilm" in out
    assert ex_main(["run", "--track", "image", "--data", ".", "--extractors", "genrator"]) == 2
    assert "Did you mean 'generator'" in capsys.readouterr().err
    assert split_specs("a,b:x=[1, 2],c") == ["a", "b:x=[1, 2]", "c"]


@pytest.mark.shared
@pytest.mark.slow  # ~6 s alone, reading the 20,000-row xlsx files dominates
def test_generator_over_aigiqa20k(shared_data, tmp_path):
    from extractors.registry import get_extractor

    m = load_dataset(shared_data / "aigiqa20k")
    s = run_extraction(m, get_extractor("generator"), tmp_path / "a.h5", batch_size=256, progress=False)
    assert (s.done, s.failed, s.dim) == (20000, 0, 16)
    from features_store import load_features

    X, y, ids, groups = load_features(tmp_path / "a.h5", ["generator"])
    assert X.shape == (14000, 16) and (X.sum(axis=1) == 1).all() and not np.isnan(y).any()


def test_runner_records_runtime_per_item(tmp_path):
    """The submission readme's runtime per item comes from the store, measured by the runner."""
    import pandas as pd

    from extractors.registry import get_extractor
    from extractors.runner import run_extraction
    from features_store.manifest import Manifest
    from features_store.store import FeatureStore

    df = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "path": [""] * 6, "prompt": ["p"] * 6,
                       "generator": ["a", "b"] * 3, "mos": [1.0] * 6, "split": ["train"] * 6, "group": ["p"] * 6})
    store = tmp_path / "s.h5"
    summary = run_extraction(Manifest(df, root=str(tmp_path), name="t"), get_extractor("generator"), store,
                             progress=False)
    with FeatureStore(store, mode="r") as st:
        attrs = st._cfg(summary.key).attrs
        assert attrs["items_timed"] == 6 and attrs["seconds_per_item"] > 0 and attrs["device"] == "cpu"


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no final checkpoint (the runner's store is closed unsaved)."""


def test_a_run_killed_after_its_first_rows_keeps_their_feature_names(tmp_path, monkeypatch):
    """The rows reach the journal at once; the names, which the file takes only once it knows the width,
    used to wait for the next checkpoint (60 s): a runner killed in between left generator_0 ... in the
    store, for good when the rerun had nothing left to compute (killed after its last batch)."""
    from extractors.registry import get_extractor

    m, store = toy(8), tmp_path / "s.h5"
    real_record = FeatureStore.record

    def record_then_die(self, key, done_idx=(), *args, **kwargs):
        real_record(self, key, done_idx, *args, **kwargs)
        if len(done_idx) and len(self.pending(key)) == 0:  # the last batch is in the journal
            raise _Killed

    monkeypatch.setattr(FeatureStore, "record", record_then_die)
    with pytest.raises(_Killed):
        run_extraction(m, get_extractor("generator"), store, batch_size=4, progress=False)
    monkeypatch.undo()
    names = ["generator=g0", "generator=g1", "generator=g2", "generator_unknown"]
    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        assert st.counts(key)["done"] == 8 and st.feature_names(key) == names
    assert run_extraction(m, get_extractor("generator"), store, batch_size=4, progress=False).done == 0
    with FeatureStore(store, "r") as st:
        assert st.feature_names(key) == names
