"""Extraction's CPU settings: allocator thresholds, the thread default, torch never loaded for nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from extractors import cpu_runtime
from extractors.__main__ import main as ex_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_malloc_threshold():
    p = cpu_runtime.parse_malloc_threshold
    assert p(None) == p("") == p("on") == cpu_runtime.default_malloc_threshold()
    assert 64 << 20 <= cpu_runtime.default_malloc_threshold() <= 1 << 30
    assert p("off") is None and p("0") is None and p(0) is None
    assert p("512M") == 512 << 20 and p("1G") == 1 << 30 and p("65536") == 65536 and p("2gib") == 2 << 30
    with pytest.raises(ValueError, match="--malloc-threshold"):
        p("lots")


def test_set_malloc_thresholds_on_glibc_and_off(monkeypatch):
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", cpu_runtime.ENV_MALLOC):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(cpu_runtime.ENV_MALLOC, "off")
    assert cpu_runtime.set_malloc_thresholds() is None
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    if cpu_runtime._libc() is None:
        pytest.skip("not glibc: the thresholds do not apply")
    monkeypatch.delenv(cpu_runtime.ENV_MALLOC)
    try:
        want = cpu_runtime.default_malloc_threshold()
        assert cpu_runtime.set_malloc_thresholds() == want
        # spawned children (not forked ones, which inherit mallopt's state) get it from the environment
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == os.environ["MALLOC_TRIM_THRESHOLD_"] == str(want)
        assert cpu_runtime.set_malloc_thresholds("256M") == 256 << 20
    finally:  # this test process goes back to glibc's usual behaviour for the tests that follow
        cpu_runtime.set_malloc_thresholds(128 << 10)
        cpu_runtime.trim()


def test_bad_malloc_threshold_is_one_line_error(capsys):
    assert ex_main(["run", "--track", "image", "--data", ".", "--extractors", "generator",
                    "--malloc-threshold", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --malloc-threshold") and "\n" not in err
    assert ex_main(["run", "--track", "image", "--data", ".", "--extractors", "generator", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_auto_threads_leaves_busy_cores_alone():
    a = cpu_runtime.auto_threads
    assert a(cpus=2, busy=0) == 2 and a(cpus=2, busy=1) == 1 and a(cpus=2, busy=7) == 1
    assert a(cpus=8, busy=2.4) == 6 and a(cpus=8, busy=2.6) == 5
    assert a(cpus=4, busy=None) == 4 or cpu_runtime.busy_elsewhere() is not None  # unknown load: all CPUs


def test_recent_load_counts_as_busy(monkeypatch):
    """A machine busy over the last minute is busy even if an instant sample finds it quiet."""
    monkeypatch.setattr(cpu_runtime, "_nr_running", lambda: 1)
    monkeypatch.setattr(cpu_runtime, "_own_running", lambda: 1)
    monkeypatch.setattr(cpu_runtime.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert cpu_runtime.busy_elsewhere(samples=3, interval_s=0) == 2.0
    assert cpu_runtime.busy_elsewhere(samples=3, interval_s=0, own=2) == 1.0
    assert cpu_runtime.auto_threads(cpus=2) == 1
    monkeypatch.setattr(cpu_runtime.os, "getloadavg", lambda: (0.9, 0.5, 0.2))  # idle: all CPUs
    assert cpu_runtime.auto_threads(cpus=2) == 2


def test_usable_cpus_and_load_are_sane():
    n = cpu_runtime.usable_cpus()
    assert 1 <= n <= (os.cpu_count() or 1)
    busy = cpu_runtime.busy_elsewhere(samples=3)
    if sys.platform.startswith("linux"):
        assert busy is not None and busy >= 0


def test_thread_parse():
    assert cpu_runtime.parse_threads(None) is None and cpu_runtime.parse_threads("auto") is None
    assert cpu_runtime.parse_threads("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="--threads"):
            cpu_runtime.parse_threads(bad)


def test_governor_follows_the_load(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        loads = iter([2, 1, 1, 2])
        monkeypatch.setattr(cpu_runtime, "auto_threads", lambda **_: next(loads))
        g = cpu_runtime.ThreadGovernor(None, every_s=0.0)
        seen = []
        for _ in range(4):
            g.tick()
            seen.append(torch.get_num_threads())
        assert seen == [2, 1, 1, 2] and [t for _, t in g.changes] == [2, 1, 2]
        g = cpu_runtime.ThreadGovernor(1, every_s=0.0)  # explicit: set once, never re-chosen
        g.tick(), g.tick()
        assert torch.get_num_threads() == 1 and len(g.changes) == 1
    finally:
        torch.set_num_threads(before)


def _table(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"item_id": [f"G{i % 3}_{i}" for i in range(12)], "prompt": [f"p{i}" for i in range(12)],
                  "generator": [f"G{i % 3}" for i in range(12)], "mos": np.arange(12.0)}).to_csv(path, index=False)
    return path


def test_threads_option_never_loads_torch_for_a_run_without_torch(tmp_path):
    """--threads (THREADS=1 in make) used to import torch up front: a cached run paid ~0.5 GB for it."""
    labels = _table(tmp_path)
    code = ("import sys; from extractors.__main__ import main; "
            f"rc = main(['run', '--track', 'image', '--data', {str(labels)!r}, '--extractors', 'generator', "
            f"'--store', {str(tmp_path / 's.h5')!r}, '--threads', '1', '--no-progress']); "
            "print('rc', rc, 'torch', 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": REPO}
    for _ in range(2):  # the first run computes, the second finds everything in the store
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "rc 0 torch False" in out.stdout, out.stdout + out.stderr
