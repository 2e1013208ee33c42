"""Issue 12, silent loss in the store: changed media, datasets sharing a store, trusted journal entries.

Each test reproduces the fault first (the comment says what the earlier code did)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from extractors.base import Extractor
from features_store import FeatureStore, StoreError, load_dataset

REPO = Path(__file__).resolve().parents[1]


class PixelMean(Extractor):
    """An image extractor that needs no weights: per-channel mean and std of the pixels."""

    name = "pixel_mean"
    kind = "image"
    defaults = {}

    def prepare(self, item):
        from PIL import Image

        with Image.open(item.path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32)
        return np.r_[a.mean(axis=(0, 1)), a.std(axis=(0, 1))]

    def collate(self, prepared):
        return np.stack(prepared)

    def compute(self, batch, items):
        return batch


if os.environ.get("AIGCQ_INTEGRITY_PLUGIN"):  # imported by the subprocess as a plugin
    from extractors.runner import register_extractor

    register_extractor(PixelMean, dim="6")


def _env(**extra):
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "AIGCQ_INTEGRITY_PLUGIN": "1", **extra}


def features(data, *extra, cwd, extractors="pixel_mean", check=True):
    cmd = [sys.executable, "-m", "extractors", "run", "--track", "image", "--data", str(data), "--extractors",
           extractors, "--no-progress", "--workers", "0", "--plugins", "test_integrity_store", *map(str, extra)]
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def make_dataset(folder: Path, n=6, name="ds", color=lambda i: (40 * i % 255, 90, 200)) -> Path:
    """A YAML table dataset of n small PNGs (its name is the YAML's stem)."""
    from PIL import Image

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), color(i)).save(media / f"img{i}.png")
    pd.DataFrame({"name": [f"img{i}.png" for i in range(n)], "prompt": [f"prompt {i}" for i in range(n)],
                  "mos": np.linspace(1, 5, n)}).to_csv(folder / "labels.csv", index=False)
    (folder / f"{name}.yaml").write_text("adapter: table\nlabels: labels.csv\nroot: media\n")
    return folder / f"{name}.yaml"


def only_key(store):
    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        return key, st.read(key), st.status(key), list(st.df["item_id"])


# --------------------------------------------------------------- 3. datasets sharing a store
def test_two_datasets_with_the_same_name_get_different_default_stores(tmp_path):
    # before: both defaulted to stores/ds-image.h5; the second run added its 4 items to the first's 6
    a = make_dataset(tmp_path / "a", n=6)
    b = make_dataset(tmp_path / "b", n=4, color=lambda i: (0, 0, 0))
    work = tmp_path / "work"
    work.mkdir()
    features(a, cwd=work)
    features(b, cwd=work)
    stores = sorted((work / "stores").glob("*.h5"))
    assert len(stores) == 2, stores
    for s in stores:
        assert s.name.startswith("ds-image-") and len(s.stem) == len("ds-image-") + 8
    sizes = sorted(len(only_key(s)[3]) for s in stores)
    assert sizes == [4, 6]  # no store holds foreign rows


def test_naming_rule_is_shared_and_finds_a_store_under_the_earlier_name(tmp_path, monkeypatch, capsys):
    from features_store import naming

    a = make_dataset(tmp_path / "a")
    b = make_dataset(tmp_path / "b")
    ma, mb = load_dataset(a), load_dataset(b)
    assert ma.source == str(a.resolve())
    assert naming.default_store_path(ma, "image") != naming.default_store_path(mb, "image")
    assert naming.default_store_path(ma, "image") == naming.default_store_path(load_dataset(a), "image")  # stable
    monkeypatch.chdir(tmp_path)
    legacy = Path("stores/ds-image.h5")
    features(a, "--store", legacy, cwd=tmp_path)  # a store made (or named) the earlier way, for dataset a
    path, note = naming.find_default_store(ma, "image")
    assert path == legacy and "earlier naming rule" in note
    path, note = naming.find_default_store(mb, "image")  # same name, other dataset: never reused
    assert path == naming.default_store_path(mb, "image") and "another dataset" in note
    # the entry points use the same rule: the legacy store gets the rerun (0 computed)
    res = features(a, cwd=tmp_path)
    assert "0 computed" in res.stdout and "earlier naming rule" in res.stderr
    from aigcq.cli import default_store

    assert default_store(str(a), "image") == str(legacy)


def test_a_store_refuses_items_of_another_dataset(tmp_path):
    # before: with --store shared, the second dataset's items were appended (train split with foreign rows)
    a = make_dataset(tmp_path / "a", n=6)
    b = make_dataset(tmp_path / "b", n=4)
    (tmp_path / "b" / "labels.csv").write_text((tmp_path / "b" / "labels.csv").read_text().replace("img", "other"))
    for i in range(4):
        os.replace(tmp_path / "b" / "media" / f"img{i}.png", tmp_path / "b" / "media" / f"other{i}.png")
    store = tmp_path / "shared.h5"
    features(a, "--store", store, cwd=tmp_path)
    res = features(b, "--store", store, cwd=tmp_path, check=False)
    assert res.returncode == 2 and "would add 4 items" in res.stderr and str(b.resolve()) in res.stderr
    assert len(only_key(store)[3]) == 6


def test_merge_refuses_stores_of_different_datasets(tmp_path):
    # before: `features_store merge` of unrelated stores succeeded silently (10 items in one store)
    a = make_dataset(tmp_path / "a", n=6)
    b = make_dataset(tmp_path / "b", n=4)
    features(a, "--store", tmp_path / "a.h5", cwd=tmp_path)
    features(b, "--store", tmp_path / "b.h5", cwd=tmp_path)
    res = subprocess.run([sys.executable, "-m", "features_store", "merge", str(tmp_path / "out.h5"),
                          str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and "different datasets" in line and "a.h5" in line and "b.h5" in line
    assert not (tmp_path / "out.h5").exists()
    # nor into an output store that holds another dataset (read from its attributes: naming.stored_dataset)
    before = only_key(tmp_path / "b.h5")
    res = subprocess.run([sys.executable, "-m", "features_store", "merge", str(tmp_path / "b.h5"),
                          str(tmp_path / "a.h5")], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "refusing to merge into" in res.stderr and "b.h5" in res.stderr
    after = only_key(tmp_path / "b.h5")
    np.testing.assert_array_equal(before[1], after[1])
    assert before[3] == after[3]
    # shards of one dataset still merge
    for k in (0, 1):
        features(a, "--store", tmp_path / "m.h5", "--shard", f"{k}/2", cwd=tmp_path)
    shards = sorted(str(p) for p in tmp_path.glob("m.shard-*.h5"))
    res = subprocess.run([sys.executable, "-m", "features_store", "merge", str(tmp_path / "m.h5"), *shards],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ref = only_key(tmp_path / "a.h5")
    got = only_key(tmp_path / "m.h5")
    np.testing.assert_array_equal(ref[1], got[1])


# --------------------------------------------------------------- 5. journal entries
def _store_with_journal(tmp_path, n=8):
    """A store whose rows live in journal files only (as after a kill before any checkpoint)."""
    from features_store.manifest import Manifest

    ids = [f"i{k}" for k in range(n)]
    m = Manifest(pd.DataFrame({"item_id": ids, "prompt": ids}), tmp_path, "toy")
    store = tmp_path / "j.h5"
    st = FeatureStore(store)
    st.set_manifest(m)
    st.ensure_config("fake-000000000000", {"name": "fake"})
    for a in range(0, n, 4):
        rows = np.arange(a, a + 4)
        st.record("fake-000000000000", rows, np.repeat(rows[:, None], 3, axis=1).astype(np.float32))
    st.close(checkpoint=False)
    return store, "fake-000000000000"


def test_a_journal_entry_rewritten_with_other_values_is_set_aside_and_recomputed(tmp_path):
    # before: the rewritten (valid .npz) entry was applied silently: 4 wrong rows, counted as done
    store, key = _store_with_journal(tmp_path)
    entry = Path(f"{store}.journal") / "0000000001.npz"
    with np.load(entry) as z:
        fields = {k: z[k] for k in z.files}
    fields["values"] = np.full_like(fields["values"], 99.0)
    with open(entry, "wb") as fh:
        np.savez(fh, **fields)  # keeps the old checksum field, with other values
    with pytest.warns(UserWarning, match="untrusted journal file .*0000000001.npz.*checksum"):
        with FeatureStore(store) as st:
            assert st.counts(key) == {"done": 4, "failed": 0, "pending": 4}
            assert list(st.pending(key)) == [4, 5, 6, 7]
            assert not np.any(st.read(key) == 99.0)
    assert (Path(f"{store}.journal") / "0000000001.npz.corrupt").is_file()  # set aside, not deleted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set aside once: reopening is quiet
        FeatureStore(store, "r").close()


def test_a_journal_entry_naming_an_unknown_key_does_not_make_the_store_unopenable(tmp_path):
    # before: StoreError "refers to key ... which ... does not hold": the store could not be opened at all
    from features_store import journal

    store, key = _store_with_journal(tmp_path)
    journal.write(Path(f"{store}.journal"), 5, "ghost-111111111111", [0], ["i0"], np.ones((1, 3), np.float32),
                  [], [], [])
    with pytest.warns(UserWarning, match="ghost-111111111111"):
        with FeatureStore(store, "r") as st:  # a reader opens it (and leaves the file alone)
            assert st.counts(key)["done"] == 8
    with pytest.warns(UserWarning, match="set aside"):
        with FeatureStore(store) as st:
            assert st.counts(key)["done"] == 8
    assert (Path(f"{store}.journal") / "0000000005.npz.corrupt").is_file()


def test_a_journal_entry_without_checksum_is_not_trusted(tmp_path):
    store, key = _store_with_journal(tmp_path)
    entry = Path(f"{store}.journal") / "0000000000.npz"
    with np.load(entry) as z:
        fields = {k: z[k] for k in z.files if k != "checksum"}
    with open(entry, "wb") as fh:
        np.savez(fh, **fields)
    with pytest.warns(UserWarning, match="no checksum"):
        with FeatureStore(store) as st:
            assert list(st.pending(key)) == [0, 1, 2, 3]


# --------------------------------------------------------------- 2. changed media
def test_changed_media_are_recomputed_naming_the_items(tmp_path):
    # before: "6 already in the store" and the old features of the replaced images
    from PIL import Image

    data = make_dataset(tmp_path / "d", n=6)
    store = tmp_path / "s.h5"
    features(data, "--store", store, cwd=tmp_path)
    _, before, _, ids = only_key(store)
    for i in (1, 4):  # replaced by black images, same names
        Image.new("RGB", (16, 16), (0, 0, 0)).save(tmp_path / "d" / "media" / f"img{i}.png")
    res = features(data, "--store", store, cwd=tmp_path)
    assert "2 computed" in res.stdout and "4 already in the store" in res.stdout
    assert "media of 2 item(s) changed" in res.stderr and "img1.png" in res.stderr and "img4.png" in res.stderr
    _, after, status, _ = only_key(store)
    assert (status == 1).all()
    assert (after[[1, 4]] == 0).all()
    np.testing.assert_array_equal(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    fresh = tmp_path / "fresh.h5"  # equal to a store computed from scratch on the new media
    features(data, "--store", fresh, cwd=tmp_path)
    np.testing.assert_array_equal(only_key(fresh)[1], after)
    res = features(data, "--store", store, cwd=tmp_path)  # and the record was updated: quiet rerun
    assert "0 computed" in res.stdout and "changed" not in res.stderr


def test_a_touched_file_with_the_same_content_is_not_recomputed(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    store = tmp_path / "s.h5"
    features(data, "--store", store, cwd=tmp_path)
    img = tmp_path / "d" / "media" / "img2.png"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 5_000_000_000))
    res = features(data, "--store", store, cwd=tmp_path)
    assert "0 computed" in res.stdout and "changed" not in res.stderr
    with FeatureStore(store, "r") as st:  # the new mtime is recorded (next time: no hashing)
        from features_store.fingerprint import fingerprints

        assert fingerprints(st)["mtime_ns"][st.index_of(["img2.png"])[0]] == img.stat().st_mtime_ns


def test_on_changed_refuse_names_the_items_and_changes_nothing(tmp_path):
    from PIL import Image

    data = make_dataset(tmp_path / "d", n=4)
    store = tmp_path / "s.h5"
    features(data, "--store", store, cwd=tmp_path)
    _, before, _, _ = only_key(store)
    Image.new("RGB", (20, 20), (0, 0, 0)).save(tmp_path / "d" / "media" / "img3.png")
    res = features(data, "--store", store, "--on-changed", "refuse", cwd=tmp_path, check=False)
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "img3.png" in errors[0] and "--on-changed recompute" in errors[0]
    assert "Traceback" not in res.stderr
    _, after, status, _ = only_key(store)
    np.testing.assert_array_equal(after, before)
    assert (status == 1).all()


def test_fingerprints_survive_a_merge_of_shards(tmp_path):
    from PIL import Image

    data = make_dataset(tmp_path / "d", n=6)
    for k in (0, 1):
        features(data, "--store", tmp_path / "m.h5", "--shard", f"{k}/2", cwd=tmp_path)
    shards = sorted(str(p) for p in tmp_path.glob("m.shard-*.h5"))
    res = subprocess.run([sys.executable, "-m", "features_store", "merge", str(tmp_path / "m.h5"), *shards],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    Image.new("RGB", (16, 16), (0, 0, 0)).save(tmp_path / "d" / "media" / "img5.png")
    res = features(data, "--store", tmp_path / "m.h5", cwd=tmp_path)
    assert "1 computed" in res.stdout and "img5.png" in res.stderr
