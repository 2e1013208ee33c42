"""The Ray engine on a local 2-CPU cluster: features equal a single-process run bit for bit, a
worker killed mid-shard is restarted and resumes from its journal, and tuning on Ray predicts
what the local pool predicts."""
from __future__ import annotations

import os
from pathlib import Path

import sys

import numpy as np
import pytest

from ray_helpers import features as _features
from ray_helpers import ray_worker_env, store_content

DEMO_EXTRACTORS = "nss,effnet_lite0,prompt_minilm,generator"


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (starting one costs ~7 s)."""
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray (pip install 'aigc-quality[ray]')")
    with ray_worker_env() as env:
        # address="local": a new cluster of our own, never one that `ray start` (or another test run) left
        # on this machine, which ray.init() would otherwise join and then refuse num_cpus for
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from experiments.demo_data import DemoConfig, build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "data", DemoConfig(n_sources=2, size=64))


@pytest.mark.slow  # 24 s (load 12, 2 cores): two demo extractions, 2 actors loading 4 models
def test_demo_features_on_ray_equal_a_single_process_run(cluster, demo_data, tmp_path, capsys):
    assert _features(demo_data, tmp_path / "single.h5", DEMO_EXTRACTORS) == 0
    assert _features(demo_data, tmp_path / "ray.h5", DEMO_EXTRACTORS, "--engine", "ray", "--shard-size", "8") == 0
    out = capsys.readouterr().out
    assert out.count("3 shards on") == 4  # 24 items in shards of 8 (2 batches of 4), for each of 4 extractors
    assert store_content(tmp_path / "ray.h5") == store_content(tmp_path / "single.h5")
    assert not Path(f"{tmp_path / 'ray.h5'}.ray").exists()  # shards merged, then removed
    # a rerun finds nothing to do
    assert _features(demo_data, tmp_path / "ray.h5", DEMO_EXTRACTORS, "--engine", "ray") == 0
    assert "0 computed, 0 failed, 24 already in the store" in capsys.readouterr().out


def test_worker_killed_mid_shard_has_its_shard_requeued(cluster, demo_data, tmp_path, capsys):
    from features_store import load_dataset

    ids = load_dataset(demo_data).df["item_id"].tolist()
    marker = tmp_path / "killed.pid"
    # shard 2 of 3 holds items 8..15 in batches of 4: its worker dies after its first batch
    spec = f"kill_once:kill_at={ids[13]}:marker={marker}"
    marker.write_text("reference run: do not kill")
    assert _features(demo_data, tmp_path / "single.h5", spec, "--plugins", "ray_helpers") == 0
    marker.unlink()
    capsys.readouterr()
    assert _features(demo_data, tmp_path / "ray.h5", spec, "--plugins", "ray_helpers", "--engine", "ray",
                     "--shard-size", "8") == 0
    out, err = capsys.readouterr()
    print(out, err)
    assert marker.exists()  # a worker did die
    # the lost shard went back to the queue and was computed whole by another worker
    assert "24 computed, 0 failed, 0 already in the store" in out and "1 requeued after a lost worker" in out
    pid = marker.read_text()
    assert f"worker process {pid} on " in err and "shard 2/3 (8 items) back in the queue (try 2 of 4)" in err
    assert "1 worker process(es) lost: 1 shard(s) requeued" in err
    assert store_content(tmp_path / "ray.h5") == store_content(tmp_path / "single.h5")


def test_shard_stores_an_earlier_engine_left_are_merged_first(cluster, demo_data, tmp_path, capsys):
    """The engine of earlier versions wrote shard stores under <store>.ray/, and a killed driver left
    them there: a run of this one merges them first and plans only the rest. (A driver of this engine
    keeps what it received in the store's journal: test_a_driver_killed_after_recording_...)"""
    from extractors.registry import for_track
    from extractors.runner import run_extraction
    from features_store import load_dataset

    manifest = load_dataset(demo_data)
    assert _features(demo_data, tmp_path / "single.h5", "generator") == 0
    ex = for_track("generator", "image")
    ex.device, ex.precision = "cpu", "fp32"
    left = Path(f"{tmp_path / 'ray.h5'}.ray") / f"{ex.key()}.part-00000-of-00003.h5"
    left.parent.mkdir()
    mask = np.zeros(len(manifest.df), bool)
    mask[:8] = True  # what shard 0 of the dead driver's run had computed
    run_extraction(manifest.subset(mask), ex, left, batch_size=4, progress=False, learn_from=manifest)
    capsys.readouterr()
    assert _features(demo_data, tmp_path / "ray.h5", "generator", "--engine", "ray", "--shard-size", "8") == 0
    assert "16 computed, 0 failed, 8 already in the store, dim 7, 2 shards" in capsys.readouterr().out
    assert store_content(tmp_path / "ray.h5") == store_content(tmp_path / "single.h5")
    assert not left.exists()


def test_a_worker_that_cannot_start_stops_the_run_in_one_line(cluster, demo_data, tmp_path, capsys, monkeypatch):
    """A plugin this process imports but the workers cannot (it is not on their path): said, not retried."""
    (tmp_path / "driver_only_plugin.py").write_text("from ray_helpers import KillOnce  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _features(demo_data, tmp_path / "ray.h5", "kill_once", "--plugins", "driver_only_plugin",
                     "--engine", "ray") == 2
    err = capsys.readouterr().err
    assert "error: a shard worker could not start: ModuleNotFoundError: No module named 'driver_only_plugin'" in err


def test_a_driver_killed_after_recording_a_shard_keeps_its_feature_names(tmp_path):
    """The driver writes each shard's rows to the store's journal; a key's first rows are checkpointed at
    once with its feature names, so a driver killed before its next periodic checkpoint leaves rows with
    their names, not nss_0 ... placeholders (the file takes names only once it knows the width)."""
    import pandas as pd

    from extractors.ray_engine import record_rows
    from features_store import FeatureStore
    from features_store.manifest import Manifest

    df = pd.DataFrame({"item_id": ["a", "b", "c"], "path": "", "prompt": "p", "generator": "g"})
    names = ["mscn_mean", "mscn_var"]
    rows = {"identity": {"name": "nss"}, "name": "nss", "kind": "image", "names": names, "batch_sizes": [4],
            "done_ids": np.array(["a", "c"]), "values": np.ones((2, 2), np.float32), "failed_ids": np.array(["b"]),
            "messages": ["ItemError: unreadable"]}
    st = FeatureStore(tmp_path / "s.h5", mode="a")
    st.set_manifest(Manifest(df, tmp_path, "toy"))
    record_rows(st, "nss-0123456789ab", rows)
    st.close(checkpoint=False)  # killed: the journal holds the rows, no final checkpoint
    with FeatureStore(tmp_path / "s.h5", mode="r") as st:
        assert st.feature_names("nss-0123456789ab") == names
        assert st.status("nss-0123456789ab").tolist() == [1, 2, 1]
        assert st.errors("nss-0123456789ab")["error"].tolist() == ["ItemError: unreadable"]


def test_engine_ray_refuses_hand_made_shards(demo_data, tmp_path, capsys):
    assert _features(demo_data, tmp_path / "x.h5", "generator", "--engine", "ray", "--shard", "0/2") == 2
    assert "--shard-size" in capsys.readouterr().err


def test_engine_ray_without_ray_says_how_to_install_it(demo_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    assert _features(demo_data, tmp_path / "x.h5", "generator", "--engine", "ray") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --engine ray needs Ray: pip install 'aigc-quality[ray]' (or: pip install 'ray>=2.9')"
    assert not (tmp_path / "x.h5").exists()


def test_regress_on_ray_predicts_what_the_local_pool_predicts(cluster, tmp_path):
    import optuna
    import pandas as pd

    from regressors.cli import main as reg_main
    from test_regress_cli import _make_store

    store = _make_store(tmp_path / "toy.h5")
    fit = ["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm", "--trials", "3",
           "--folds", "3", "--tune-folds", "3", "--pca", "0", "--bootstrap", "0", "--nested", "split"]
    journal = tmp_path / "studies.journal"
    assert reg_main([*fit, "--out", str(tmp_path / "local"), "--jobs", "2"]) == 0
    assert reg_main([*fit, "--out", str(tmp_path / "ray"), "--engine", "ray", "--storage", str(journal)]) == 0
    local, on_ray = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("local", "ray"))
    assert len(local) == 310 and "unlabelled" in set(local["source"])  # CV, tuning-set and final-model rows
    pd.testing.assert_frame_equal(on_ray, local, check_exact=True)
    # the studies live in the shared storage: every tuned head's search, with its trials
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    studies = optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(journal))))
    assert {s.study_name for s in studies} >= {"cv-svr-s0", "cv-enet-s0", "cv-lgbm-s0", "cv-knn-s0"}
    assert all(s.n_trials == 3 for s in studies)


def test_regress_engine_ray_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from regressors.cli import main as reg_main
    from test_regress_cli import _make_store

    monkeypatch.setitem(sys.modules, "ray", None)
    store = _make_store(tmp_path / "toy.h5")
    argv = ["fit", "--track", "image", "--store", str(store), "--out", str(tmp_path / "o"), "--engine", "ray"]
    assert reg_main(argv) == 2
    assert capsys.readouterr().err.strip() == ("error: --engine ray needs Ray: pip install 'aigc-quality[ray]' "
                                               "(or: pip install 'ray>=2.9')")
    assert not (tmp_path / "o").exists()


def test_parallel_trials_share_one_study_and_stop_at_the_budget(cluster, tmp_path, capsys):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from regressors.cli import main as reg_main
    from test_regress_cli import _make_store

    store = _make_store(tmp_path / "toy.h5")
    fit = ["fit", "--track", "image", "--store", str(store), "--extractors", "generator,prompt_minilm", "--trials", "6",
           "--folds", "3", "--tune-folds", "3", "--pca", "0", "--bootstrap", "0", "--nested", "split",
           "--engine", "ray", "--out", str(tmp_path / "out")]
    assert reg_main([*fit, "--trial-workers", "2"]) == 2  # no shared storage: refused in one line
    assert "--trial-workers needs --engine ray and --storage" in capsys.readouterr().err
    journal = tmp_path / "studies.journal"
    assert reg_main([*fit, "--trial-workers", "2", "--storage", str(journal)]) == 0
    studies = optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(journal))))
    assert {s.study_name for s in studies} >= {"cv-svr-s0", "cv-enet-s0", "cv-lgbm-s0", "cv-knn-s0"}
    assert all(6 <= s.n_trials <= 7 for s in studies)  # the budget, + at most one trial already running


def test_a_resumed_generator_block_keeps_its_vocabulary_as_a_single_run_does(cluster, tmp_path):
    """The generator block's columns are the vocabulary a store first learnt. A single run resuming it keeps
    that vocabulary (and refuses a dataset naming generators it lacks); a Ray worker, whose scratch store
    holds no names, learnt a fresh one: with one generator gone and one new, the same width, so the new
    rows went into the old columns and the block was renamed, silently (exit 0)."""
    import pandas as pd

    from extractors.ray_engine import run_ray
    from extractors.registry import for_track
    from extractors.runner import run_extraction
    from features_store.manifest import Manifest

    def manifest(gens, start=0):
        ids = [f"i{start + k:02d}" for k in range(len(gens))]
        return pd.DataFrame({"item_id": ids, "path": "", "prompt": "p", "generator": gens})

    first = manifest(["a", "b", "c"] * 4)
    single, on_ray = tmp_path / "single.h5", tmp_path / "ray.h5"
    for store in (single, on_ray):
        run_extraction(Manifest(first, tmp_path, "toy"), for_track("generator", "image"), store, batch_size=4,
                       progress=False)
    # c gone, d new: a single run refuses it; so must the Ray engine, before any worker computes
    swapped = Manifest(pd.concat([first[first.generator != "c"], manifest(["d"] * 4, 12)]), tmp_path, "toy")
    refusal = r"computed with the vocabulary \['a', 'b', 'c'\]; this dataset also names \['d'\]"
    with pytest.raises(ValueError, match=refusal):
        run_extraction(swapped, for_track("generator", "image"), single, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=refusal):
        run_ray(swapped, ["generator"], "image", on_ray, shard_size=4, batch_size=4, progress=False)
    assert store_content(on_ray) == store_content(single)
    # c gone, nothing new: the stored vocabulary (a, b, c) is kept, so new rows fit the block's 4 columns
    fewer = Manifest(pd.concat([first[first.generator != "c"], manifest(["a", "b"] * 4, 16)]), tmp_path, "toy")
    run_extraction(fewer, for_track("generator", "image"), single, batch_size=4, progress=False)
    run_ray(fewer, ["generator"], "image", on_ray, shard_size=4, batch_size=4, progress=False)
    assert store_content(on_ray) == store_content(single)


def test_a_new_shard_worker_removes_the_scratch_stores_of_dead_ones(tmp_path, monkeypatch):
    """A worker killed mid-shard (ray.kill at Ctrl-C or after an error, its driver gone, kill -9) runs no
    clean-up: its scratch store stayed in the node's TMPDIR for good (39 of them in this machine's /tmp
    after a day of test runs). The next worker on the host removes those of dead processes only."""
    import socket
    import subprocess
    import tempfile

    from extractors.ray_engine import ShardWorker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    left = {who: tmp_path / f"aigcq-shard-{h}+{pid}+x1y2" for who, h, pid in
            [("dead", host, dead.pid), ("alive", host, os.getpid()), ("other host", "elsewhere", dead.pid)]}
    for folder in left.values():
        folder.mkdir()
        (folder / "shard.h5").write_bytes(b"rows")
    ShardWorker("image", "cpu", "fp32", 4, 0, True, 60.0, "float32", None, None, {})
    assert {who for who, folder in left.items() if folder.exists()} == {"alive", "other host"}


def test_a_block_of_items_the_model_fails_on_fails_those_items_as_in_a_single_run(cluster, demo_data, tmp_path, capsys):
    """A single run stops as broken only when nothing ever worked (the first 3 batches all failed in
    compute); later blocks of failing items are failed by name and the run goes on. On Ray that test ran
    per shard: a shard that began with 3 such batches stopped the whole run (exit 2), and every rerun too."""
    spec = "fail_some:bad=chelsea"  # items 12..23 of the demo data: 3 batches of 4, all failing in compute
    assert _features(demo_data, tmp_path / "single.h5", spec, "--plugins", "ray_helpers") == 0
    assert "12 computed, 12 failed" in capsys.readouterr().out
    rc = _features(demo_data, tmp_path / "ray.h5", spec, "--plugins", "ray_helpers", "--engine", "ray",
                   "--shard-size", "12")
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "12 computed, 12 failed" in out
    assert store_content(tmp_path / "ray.h5") == store_content(tmp_path / "single.h5")
    # an extractor that fails on everything is still stopped, with the reason
    assert _features(demo_data, tmp_path / "broken.h5", "fail_some", "--plugins", "ray_helpers",
                     "--engine", "ray", "--shard-size", "12") == 2
    assert "failed on every item of the first 3 batches; last error: RuntimeError: CUDA out of memory" in \
        capsys.readouterr().err
