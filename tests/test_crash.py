"""kill -9 a real `python -m extractors run` mid-run, rerun, and get the same features as
an uninterrupted run; the store file opens after every kill."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from extractors.base import Extractor

REPO = Path(__file__).resolve().parents[1]


class SlowFake(Extractor):
    """A meta extractor that takes its time, so a kill lands mid-run."""

    name = "slow_fake"
    kind = "meta"
    defaults = {"dim": 6, "delay": 0.03}

    def prepare(self, item):
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items):
        time.sleep(self.options["delay"])
        return np.stack([np.random.default_rng(zlib.crc32(i.encode())).standard_normal(self.options["dim"])
                         for i in batch]).astype(np.float32)


if os.environ.get("AIGCQ_CRASH_PLUGIN"):  # imported by the subprocess as a plugin
    from extractors.runner import register_extractor

    register_extractor(SlowFake, dim="6")


def _cmd(data, store, every):
    return [sys.executable, "-m", "extractors", "run", "--track", "image", "--data", str(data),
            "--extractors", "slow_fake", "--store", str(store), "--batch-size", "4", "--no-progress",
            "--checkpoint-every", str(every), "--plugins", "test_crash"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
            "AIGCQ_CRASH_PLUGIN": "1"}


def _done(store):
    from features_store import FeatureStore

    with h5py.File(store, "r"):  # the file itself opens (not half-written)
        pass
    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        return key, st.counts(key)["done"]


def _kill_mid_run(data, store, every, extra_wait):
    proc = subprocess.Popen(_cmd(data, store, every), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = Path(f"{store}.journal")

    def seqs():
        return [int(p.stem) for p in journal.iterdir() if p.suffix == ".npz"] if journal.is_dir() else []

    def inode():
        return store.stat().st_ino if store.exists() else None

    old_max, old_inode = max(seqs(), default=-1), inode()
    deadline = time.monotonic() + 120
    try:  # wait until this run writes batches (a new journal file or a new .h5), then kill at random
        while not (max(seqs(), default=-1) > old_max or (old_inode is not None and inode() != old_inode)):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate()
                pytest.fail(f"extraction ended before it could be killed (rc={proc.returncode}): {err.decode()[-2000:]}")
            time.sleep(0.01)
        time.sleep(extra_wait)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(tmp_path, monkeypatch):
    from extractors import registry
    from extractors.runner import register_extractor, run_extraction
    from features_store import FeatureStore, load_dataset

    n = 240
    pd.DataFrame({"name": [f"v{i:04d}.mp4" for i in range(n)], "prompt": [f"prompt {i % 17}" for i in range(n)],
                  "mos": np.linspace(1, 5, n)}).to_csv(tmp_path / "labels.csv", index=False)
    data = tmp_path / "labels.csv"

    # the uninterrupted reference, in-process
    monkeypatch.setitem(registry.REGISTRY, "slow_fake", None)
    monkeypatch.setitem(sys.modules, "extractors._plugin_slow_fake", None)
    register_extractor(SlowFake)
    ref = run_extraction(load_dataset(data), SlowFake(), tmp_path / "ref.h5", batch_size=4, progress=False)
    assert ref.done == n

    store = tmp_path / "crash.h5"
    rng = random.Random(0)
    progress = [0]
    # first kill: a checkpoint after every batch, so the kill often lands inside one
    for every in (0, 60):
        _kill_mid_run(data, store, every, extra_wait=rng.uniform(0.1, 0.6))
        key, done = _done(store)
        assert key == ref.key and progress[-1] <= done < n  # progress kept, nothing went backwards
        progress.append(done)
        stale = [p for p in os.listdir(tmp_path) if ".tmp-" in p]
        print(f"killed (checkpoint every {every} s): {done}/{n} done kept; killed inside a checkpoint: {bool(stale)}")
    assert progress[-1] > 0
    res = subprocess.run(_cmd(data, store, 60), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{n - progress[-1]} computed" in res.stdout
    with FeatureStore(tmp_path / "ref.h5", "r") as a, FeatureStore(store, "r") as b:
        np.testing.assert_array_equal(a.read(ref.key), b.read(ref.key))  # bit-identical
        assert b.counts(ref.key) == {"done": n, "failed": 0, "pending": 0}
        assert list(a.df["item_id"]) == list(b.df["item_id"])
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    assert not [p for p in os.listdir(f"{store}.journal") if p.endswith((".npz", ".tmp"))]
