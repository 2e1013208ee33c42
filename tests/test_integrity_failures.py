"""Issue 12, hangs and unclear failures: each case reproduced first, then the fix checked.

* a DataLoader worker that is stuck (cannot hand over its batch: small /dev/shm, a deadlock)
  hung `python -m extractors run` forever at 0 % CPU; one that dies gave torch's bare
  "exited unexpectedly". Both now stop with one line naming the cause and WORKERS=0, and
  the rows computed before are kept (a real subprocess with real worker processes);
* one-line errors for bad extractor options, duplicated options, damaged model files;
* "did you mean" for a misspelt adapter, adapter option or column;
* nss on a large image: the bounded-memory path gives the numbers of the full-size path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from extractors.base import Extractor

REPO = Path(__file__).resolve().parents[1]


class WorkerFault(Extractor):
    """An image extractor whose DataLoader worker hangs, dies or works slowly at item ``at``."""

    name = "worker_fault"
    kind = "image"
    defaults = {"mode": "hang", "at": 4}
    uses_prompt = False

    def output_dim(self):
        return 2

    def prepare(self, item):
        import signal

        from torch.utils.data import get_worker_info

        if get_worker_info() is not None and item.index == self.options["at"]:
            if self.options["mode"] == "hang":  # blocked at 0 % CPU, as a worker whose batch cannot be handed over
                time.sleep(3600)
            elif self.options["mode"] == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.options["mode"] == "busy":  # slow but working
                t = time.monotonic()
                while time.monotonic() - t < 3.0:
                    pass
        if self.options["mode"] == "big":  # a tensor: handed over through /dev/shm (4 MB per item)
            import torch

            return torch.full((1 << 20,), float(item.index))
        return np.array([item.index, 1.0], np.float32)

    def compute(self, batch, items):
        if self.options["mode"] == "big":
            return np.stack([np.asarray(batch)[:, 0], np.ones(len(items))], axis=1).astype(np.float32)
        return np.asarray(batch, np.float32)


if os.environ.get("AIGCQ_FAULT_PLUGIN"):  # imported by the subprocess as a plugin
    from extractors.runner import register_extractor

    register_extractor(WorkerFault, dim="2")


def _images(folder: Path, n: int = 8) -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "img" / f"g_{i}.png")
    pd.DataFrame({"name": [f"img/g_{i}.png" for i in range(n)], "prompt": [f"p{i}" for i in range(n)],
                  "mos": np.arange(n, dtype=float)}).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def _run_cli(args, timeout=90):
    env = {**os.environ, "AIGCQ_FAULT_PLUGIN": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "extractors", "run", "--track", "image", "--no-progress",
                           "--plugins", "test_integrity_failures", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _done(store) -> int:
    from features_store import FeatureStore

    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        return st.counts(key)["done"]


# ---------------------------------------------------------------- hangs
def test_stuck_worker_stops_with_the_cause_and_keeps_rows(tmp_path):
    """Before: the run waited forever (killed by `timeout` after 30 s, nothing printed)."""
    labels = _images(tmp_path)
    store = tmp_path / "s.h5"
    res = _run_cli(["--data", str(labels), "--extractors", "worker_fault:mode=hang:at=4", "--store", str(store),
                    "--workers", "2", "--batch-size", "1", "--worker-stall", "1.5"])
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "stuck" in err and "WORKERS=0" in err and "/dev/shm" in err
    assert "Traceback" not in res.stderr
    assert _done(store) >= 2  # the batches before the stuck one are in the store
    # the advice works: in-process decoding finishes the rest
    from extractors.runner import run_extraction
    from features_store import load_dataset

    s = run_extraction(load_dataset(labels), WorkerFault(mode="hang", at=4), store, workers=0, progress=False)
    assert s.skipped >= 2 and _done(store) == 8


def _can_mount_small_shm() -> bool:
    import shutil

    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          "mount -t tmpfs -o size=1m tmpfs /dev/shm"], capture_output=True)
    return res.returncode == 0


def test_a_real_small_dev_shm_stops_with_the_cause(tmp_path):
    """The fault itself: /dev/shm of 1 MB (Docker's default is 64 MB) and 4 MB batches.

    Before: the worker's feeder thread failed ("unable to allocate shared memory") and the run
    waited forever at 0 % CPU (an effnet_lite0 run was killed by `timeout` after 60 s)."""
    if not _can_mount_small_shm():
        pytest.skip("needs `unshare -m` and permission to mount a tmpfs on /dev/shm (a private mount namespace)")
    labels = _images(tmp_path, n=4)
    env = {**os.environ, "AIGCQ_FAULT_PLUGIN": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = (f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -m extractors run --track image "
           f"--no-progress --plugins test_integrity_failures --data '{labels}' --extractors worker_fault:mode=big "
           f"--store '{tmp_path / 's.h5'}' --workers 1 --batch-size 1 --worker-stall 1.5")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and last.startswith("error: ") and "stuck" in last, res.stderr[-2000:]
    assert "WORKERS=0" in last and "/dev/shm: 1 MB" in last
    assert "/dev/shm: 1 MB" in res.stderr.split("error: ")[0]  # warned before starting the workers


def test_dead_worker_names_the_cause(tmp_path):
    """Before: 'error: DataLoader worker (pid(s) N) exited unexpectedly' and nothing else."""
    from extractors.loader import WorkerError
    from extractors.runner import run_extraction

    labels = _images(tmp_path)
    from features_store import load_dataset

    with pytest.raises(WorkerError, match=r"worker failed: DataLoader worker .*(exited unexpectedly|killed by signal).*WORKERS=0"):
        run_extraction(load_dataset(labels), WorkerFault(mode="die", at=3), tmp_path / "s.h5", workers=2,
                       batch_size=1, progress=False, worker_stall_s=30)


def test_a_worker_death_that_interrupts_a_journal_write_is_still_named(tmp_path, monkeypatch):
    """torch raises a dead worker's error from its SIGCHLD handler wherever the main process is; once it landed
    inside np.savez of a journal entry, whose clean-up then failed with zipfile's own ValueError, and the run
    ended with that ValueError instead of the advice (seen in CI). Simulated here: the write fails that way."""
    from extractors.loader import WorkerError
    from extractors.runner import run_extraction
    from features_store import FeatureStore, load_dataset

    real = FeatureStore.record
    calls = []

    def record(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            try:
                raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
            except RuntimeError:
                raise ValueError("Can't close the ZIP file while there is an open writing handle on it.")
        return real(self, *a, **k)

    monkeypatch.setattr(FeatureStore, "record", record)
    with pytest.raises(WorkerError, match=r"worker failed: DataLoader worker \(pid 4242\) is killed.*WORKERS=0.*"
                                          r"2 item\(s\) computed in this run are kept"):
        run_extraction(load_dataset(_images(tmp_path)), WorkerFault(mode="none"), tmp_path / "s.h5", workers=0,
                       batch_size=1, progress=False)
    monkeypatch.setattr(FeatureStore, "record", real)
    with pytest.raises(ValueError, match="unrelated"):  # any other error is not dressed up as a worker's death
        monkeypatch.setattr(FeatureStore, "record", lambda *a, **k: (_ for _ in ()).throw(ValueError("unrelated")))
        run_extraction(load_dataset(_images(tmp_path)), WorkerFault(mode="none"), tmp_path / "s2.h5", workers=0,
                       batch_size=1, progress=False)


def test_slow_but_busy_worker_is_waited_for(tmp_path):
    """A worker that uses CPU for longer than the stall limit is slow, not stuck."""
    from extractors.runner import run_extraction
    from features_store import load_dataset

    labels = _images(tmp_path, n=4)
    s = run_extraction(load_dataset(labels), WorkerFault(mode="busy", at=2), tmp_path / "s.h5", workers=2,
                       batch_size=1, progress=False, worker_stall_s=1.0)
    assert s.done == 4 and s.failed == 0


# ---------------------------------------------------------------- one-line errors
@pytest.mark.parametrize("spec, expected", [
    ("effnet_lite0:size=abc", "option size='abc' must be an integer (default 224)"),  # before: invalid literal for int()
    ("clip:crops=5:crops=3", "option 'crops' is given twice (crops=5 and crops=3)"),  # before: accepted, crops=3
    ("nss:max_side=[1", "value '[1' of option 'max_side' cannot be read"),
    ("reiqa:allow_pickle=yes please", "must be true or false"),
])
def test_bad_extractor_options_are_one_line(spec, expected):
    from extractors.registry import get_extractor

    with pytest.raises(ValueError) as exc:
        get_extractor(spec)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_bad_option_on_the_command_line_is_one_line(tmp_path):
    labels = _images(tmp_path, n=2)
    from extractors.__main__ import main

    for spec in ("effnet_lite0:size=abc", "clip:crops=5:crops=3"):
        res = _run_cli(["--data", str(labels), "--extractors", spec, "--store", str(tmp_path / "s.h5")])
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and spec.split(":")[1].split("=")[0] in res.stderr
    assert main  # the module command is importable without side effects


def test_legacy_and_bundle_files_damaged_but_valid_json(tmp_path, capsys):
    """Before: a model.pkl.json holding a list gave a TypeError traceback; one without 'target' printed
    'error: target'; an empty one repeated its message twice."""
    from regressors.cli import main

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.pkl").write_bytes(b"x")
    (legacy / "model.pkl.sha256").write_text("")
    cases = {"[1, 2]": "expected an object with track", '{"track": "image"}': "KeyError: 'target'",
             "": "is not valid JSON", '{"track": "image", "target": "mos", "store_keys": 5, "n_features": 1}':
             "expected an object with track"}
    for text, expected in cases.items():
        (legacy / "model.pkl.json").write_text(text)
        assert main(["predict", "--model", str(legacy), "--store", str(tmp_path / "none.h5"),
                     "--out", str(tmp_path / "o")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
        assert lines[0].count("not valid JSON") <= 1 and "model.pkl.json" in lines[0]
    # a bundle.json that parses but has the wrong shape
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    base = {"format": "aigcq-model-bundle", "format_version": 1, "track": "image", "target": {"name": "mos"},
            "features": [{"block": "generator", "key": "generator-0"}], "files": {}, "n_features": 1}
    for change, expected in [({"target": "mos"}, "target must be an object"),
                             ({"features": 5}, "features must be a list"),
                             ({"track": "audio"}, "track is 'audio'"),
                             ({"format_version": "one"}, "is not one this version reads")]:
        (bundle / "bundle.json").write_text(json.dumps({**base, **change}))
        assert main(["predict", "--model", str(bundle), "--store", str(tmp_path / "none.h5"),
                     "--out", str(tmp_path / "o")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "bundle.json" in lines[0], lines
    from regressors.bundle import BundleError, read_info

    (bundle / "bundle.json").write_text(json.dumps({**base, "features": [{"block": 1}]}))
    with pytest.raises(BundleError, match="bundle.json: features must be a list"):
        read_info(bundle)


def test_empty_checksum_of_a_legacy_model_is_one_line_on_the_command_line(tmp_path):
    from extractors.runner import run_extraction
    from features_store import FeatureStore, load_dataset

    labels = _images(tmp_path, n=3)
    store = tmp_path / "g.h5"
    run_extraction(load_dataset(labels), __import__("extractors.registry").registry.get_extractor("generator"),
                   store, progress=False)
    with FeatureStore(store, "r") as st:
        (key,) = st.keys()
        dim = st.config(key)["dim"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.pkl").write_bytes(b"x")
    (legacy / "model.pkl.sha256").write_text("")
    (legacy / "model.pkl.json").write_text(json.dumps({"track": "image", "target": "mos", "n_features": dim,
                                                        "store_keys": {"generator": key}}))
    res = subprocess.run([sys.executable, "-m", "regressors", "predict", "--model", str(legacy), "--store",
                          str(store), "--split", "train", "--allow-in-sample", "--trust-pickle", "--out",
                          str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "model.pkl.sha256 is empty" in lines[0], res.stderr


# ---------------------------------------------------------------- did you mean
def test_misspelt_adapter_option_and_column_get_suggestions(tmp_path):
    """Before: `adapter: tabel` said "adapter 'tabel' needs 'path: <dataset folder>'"."""
    from features_store import load_dataset

    labels = _images(tmp_path, n=2)
    cases = {"adapter: tabel\nlabels: labels.csv\n": "unknown adapter 'tabel'. Did you mean 'table'?",
             "adapter: table\nlabels: labels.csv\ncolums: {mos: mos}\n": "Did you mean 'columns'",
             "adapter: table\nlabels: labels.csv\ncolumns: {moss: mos}\n": "Did you mean 'mos'?",
             "adapter: table\nlabels: labels.csv\ncolumns: {mos: MSO}\n": "Did you mean 'mos'?",
             "adapter: table\nlabels: labels.csv\ngenerator_regexp: x\n": "Did you mean 'generator_regex'?"}
    for text, expected in cases.items():
        (tmp_path / "d.yaml").write_text(text)
        with pytest.raises(ValueError) as exc:
            load_dataset(tmp_path / "d.yaml")
        assert expected in str(exc.value), str(exc.value)
    assert labels.is_file()
    with pytest.raises(ValueError, match="Did you mean 'fetv'"):
        load_dataset(labels.parent, adapter="fevt")


# ---------------------------------------------------------------- nss memory
def test_nss_large_image_path_gives_the_full_size_numbers():
    """The bounded-memory path (blockiness in stripes, no full-size float copies) changes no number:
    a 2,100 x 1,500 image (above max_side) against the plain full-resolution computation."""
    from extractors import nss

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (1500, 2100, 3), dtype=np.uint8)
    img[:, ::8] //= 2  # an 8-pixel grid, so blockiness is not ~1
    plain = nss.blockiness(nss.luma32(img))
    assert nss.blockiness_rgb(img, rows=257) == pytest.approx(plain, rel=1e-12) and plain > 1.05
    v = nss.nss_vector(img, max_side=1024)
    assert v[nss.FEATURE_NAMES.index("blockiness")] == pytest.approx(plain, rel=1e-12)
    assert v[nss.FEATURE_NAMES.index("width")] == 2100


def test_nss_full_resolution_refuses_a_huge_image_per_item():
    from extractors import nss
    from extractors.base import ItemError

    big = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), shape=(8193, 8192, 3), strides=(0, 0, 1))
    with pytest.raises(ItemError, match=r"8192x8193 is above 67,108,864 pixels.*max_side=1024"):
        nss.nss_vector(big, max_side=None)


def test_rgb_array_copies_in_stripes_exactly():
    from extractors.media import rgb_array

    a = np.random.default_rng(0).integers(0, 255, (2500, 1100, 3), dtype=np.uint8)
    assert np.array_equal(rgb_array(Image.fromarray(a), rows=700), a)
