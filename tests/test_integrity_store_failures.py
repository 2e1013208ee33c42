"""Issue 12, store failures: a symlinked store, a truncated file, a read-only folder, a full disk,
and a resume with another batch size. Each test reproduces the fault first (the comment says what
the earlier code did). The full-disk and read-only-file-system cases mount a small tmpfs when
the tests run as root; the in-process variants run everywhere."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from extractors.base import Extractor
from features_store import FeatureStore, StoreError

REPO = Path(__file__).resolve().parents[1]


class WideFake(Extractor):
    """A meta extractor with wide rows (fills a small disk quickly); values depend on the id only."""

    name = "wide_fake"
    kind = "meta"
    defaults = {"dim": 2048}

    def prepare(self, item):
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items):
        return np.stack([np.random.default_rng(zlib.crc32(i.encode())).standard_normal(self.options["dim"])
                         for i in batch]).astype(np.float32)


if os.environ.get("AIGCQ_FAILURES_PLUGIN"):  # imported by the subprocess as a plugin
    from extractors.runner import register_extractor

    register_extractor(WideFake, dim="2048")


def _env():
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "AIGCQ_FAILURES_PLUGIN": "1"}


def dataset(folder: Path, n=60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"name": [f"v{i:04d}.mp4" for i in range(n)], "prompt": [f"prompt {i % 7}" for i in range(n)],
                  "mos": np.linspace(1, 5, n)}).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def features(data, store, *extra, check=True, batch_size=4):
    cmd = [sys.executable, "-m", "extractors", "run", "--track", "image", "--data", str(data), "--extractors",
           "wide_fake", "--store", str(store), "--no-progress", "--batch-size", str(batch_size),
           "--checkpoint-every", "0", "--plugins", "test_integrity_store_failures", *map(str, extra)]
    # cwd: the data folder, so that PYTHONPATH (not the working directory) decides which code runs
    res = subprocess.run(cmd, cwd=Path(data).parent, env=_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def one_line_error(res) -> str:
    assert res.returncode != 0, res.stdout[-2000:]
    # dataset warnings/notes may precede it; the failure itself is one "error:" line, no traceback
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip() and not ln.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def done_count(store) -> int:
    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        return st.counts(key)["done"]


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (root only): a real full disk / read-only file system."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the in-process variants below cover the messages")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (container without CAP_SYS_ADMIN)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --------------------------------------------------------------- symlinks
def test_a_store_reached_through_a_symlink_shares_the_lock_and_stays_a_symlink(tmp_path):
    # before: the symlink got its own lock (a second writer) and os.replace turned it into a separate file
    from features_store.manifest import Manifest

    real = tmp_path / "real" / "s.h5"
    real.parent.mkdir()
    link = tmp_path / "link.h5"
    link.symlink_to(real)
    ids = [f"i{k}" for k in range(4)]
    m = Manifest(pd.DataFrame({"item_id": ids, "prompt": ids}), tmp_path, "toy")
    with FeatureStore(real) as st:
        st.set_manifest(m)
        with pytest.raises(StoreError, match="being written by another process"):
            FeatureStore(link)
    with FeatureStore(link) as st:
        st.ensure_config("fake-000000000000", {"name": "fake"})
        st.write("fake-000000000000", [0, 1], np.ones((2, 3), np.float32))
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    with FeatureStore(real, "r") as st:  # the rows went to the real file
        assert st.counts("fake-000000000000")["done"] == 2


# --------------------------------------------------------------- damaged / unwritable / full
def test_a_truncated_store_is_a_one_line_error_naming_the_file(tmp_path):
    # before: a traceback ending in h5py's "Unable to synchronously open file (truncated file: eof = ...)"
    data = dataset(tmp_path / "d", n=12)
    store = tmp_path / "t.h5"
    features(data, store)
    size = store.stat().st_size
    with open(store, "r+b") as fh:
        fh.truncate(size // 2)
    res = features(data, store, check=False)
    line = one_line_error(res)
    assert str(store) in line and "damaged" in line and "move it aside" in line
    info = subprocess.run([sys.executable, "-m", "features_store", "info", str(store)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True)
    assert str(store) in one_line_error(info)
    assert store.stat().st_size == size // 2  # left as it was


def test_a_read_only_store_folder_is_a_one_line_error(tmp_path, tiny_fs):
    # before: a traceback (OSError: [Errno 30] Read-only file system: '.../ro.h5.journal/LOCK')
    data = dataset(tmp_path / "d", n=8)
    store = tiny_fs / "ro.h5"
    features(data, store)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    more = dataset(tmp_path / "d2", n=12)  # 4 new items: the store must be written
    res = features(more, store, check=False)
    line = one_line_error(res)
    assert "not writable" in line and "read-only file system" in line and str(tiny_fs) in line
    assert done_count(store) == 8


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder; the tmpfs test above covers root")
def test_a_store_folder_without_write_permission_is_a_one_line_error(tmp_path):
    data = dataset(tmp_path / "d", n=8)
    folder = tmp_path / "ro"
    folder.mkdir()
    store = folder / "ro.h5"
    features(data, store)
    os.chmod(folder, 0o555)
    os.chmod(f"{store}.journal", 0o555)
    try:
        res = features(dataset(tmp_path / "d2", n=12), store, check=False)
    finally:
        os.chmod(folder, 0o755)
        os.chmod(f"{store}.journal", 0o755)
    line = one_line_error(res)
    assert "not writable" in line and "permission denied" in line
    assert done_count(store) == 8


def test_a_full_disk_is_a_one_line_error_and_nothing_computed_is_lost(tmp_path, tiny_fs):
    # before: an h5py traceback ("Can't decrement id ref count" / "No space left on device")
    n = 100  # 100 rows x 8 KiB: more than the 1 MiB file system holds (the journal and a file copy)
    data = dataset(tmp_path / "d", n=n)
    store = tiny_fs / "full.h5"
    res = features(data, store, check=False)
    line = one_line_error(res)
    assert "disk full" in line and "nothing computed is lost" in line
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_fs)], check=True)
    kept = done_count(store)
    assert kept > 0
    res = features(data, store)
    assert f"{n - kept} computed" in res.stdout
    ref = tmp_path / "ref.h5"
    features(data, ref)
    with FeatureStore(ref, "r") as a, FeatureStore(store, "r") as b:
        (key,) = a.keys()
        np.testing.assert_array_equal(a.read(key), b.read(key))


def test_write_failures_in_process_name_the_cause(tmp_path, monkeypatch, capsys):
    """The same messages without root: ENOSPC from a journal write, HDF5's errno-less error on a full disk."""
    import shutil

    from extractors.__main__ import main
    from extractors.runner import register_extractor
    from features_store import journal

    register_extractor(WideFake)
    data = dataset(tmp_path / "d", n=20)
    store = tmp_path / "s.h5"
    real_write, calls = journal.write, []

    def full_after_two(*a, **k):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*a, **k)

    monkeypatch.setattr(journal, "write", full_after_two)
    argv = ["run", "--track", "image", "--data", str(data), "--extractors", "wide_fake", "--store", str(store),
            "--no-progress", "--batch-size", "4", "--checkpoint-every", "1000"]
    assert main(argv) == 2
    err = error_line(capsys.readouterr().err)
    assert "disk full" in err and "nothing computed is lost" in err
    monkeypatch.setattr(journal, "write", real_write)
    assert done_count(store) == 8  # the two batches journaled before the disk filled

    # HDF5 reports a full disk without errno: the free space names the cause
    def hdf5_full(*a, **k):
        raise RuntimeError("Can't decrement id ref count (unable to extend file properly)")

    monkeypatch.setattr(shutil, "copyfile", hdf5_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
    assert main(argv) == 2
    err = error_line(capsys.readouterr().err)
    assert "disk full" in err and str(store) in err


# --------------------------------------------------------------- batch size
class BatchSensitive(WideFake):
    """Like a real model on CPU: a row's numbers depend (slightly) on the size of its batch."""

    name = "batch_sensitive"
    defaults = {"dim": 4}

    def compute(self, batch, items):
        return super().compute(batch, items) + np.float32(1e-5) * len(batch)


def test_a_resume_with_another_batch_size_keeps_the_recorded_one(tmp_path, capsys):
    # before: the resumed rows were computed with the new batch size and mixed in (differing by ~1e-5
    # from an undisturbed run), with nothing recorded
    from extractors.__main__ import main
    from extractors.runner import register_extractor

    register_extractor(BatchSensitive)
    n = 16
    pd.DataFrame({"name": [f"v{i:02d}.mp4" for i in range(n)], "prompt": [f"p{i}" for i in range(n)],
                  "split": ["train"] * 8 + ["test"] * 8, "mos": np.linspace(1, 5, n)}).to_csv(tmp_path / "l.csv",
                                                                                         index=False)

    def run(store, *extra):
        argv = ["run", "--track", "image", "--data", str(tmp_path / "l.csv"), "--extractors", "batch_sensitive",
                "--store", str(store), "--no-progress", *extra]
        assert main(argv) == 0
        return capsys.readouterr().err

    def values(store):
        with FeatureStore(store, "r") as st:
            (key,) = st.keys()
            return st.read(key), st.batch_sizes(key)

    run(tmp_path / "ref.h5", "--batch-size", "4")  # undisturbed
    run(tmp_path / "s.h5", "--batch-size", "4", "--split", "train")  # interrupted after the train split...
    err = run(tmp_path / "s.h5", "--batch-size", "8")  # ...and resumed with another batch size
    assert "resuming with 4, not 8" in err and "--allow-batch-change" in err
    ref, ref_sizes = values(tmp_path / "ref.h5")
    got, sizes = values(tmp_path / "s.h5")
    np.testing.assert_array_equal(got, ref)  # equal to the undisturbed run
    assert ref_sizes == sizes == [4]
    # an explicit mix is computed as asked and recorded
    run(tmp_path / "m.h5", "--batch-size", "4", "--split", "train")
    run(tmp_path / "m.h5", "--batch-size", "8", "--allow-batch-change")
    got, sizes = values(tmp_path / "m.h5")
    assert sizes == [4, 8] and not np.array_equal(got, ref)
