"""Helpers for tests/test_ray.py and tests/test_ray_cluster.py, importable by Ray worker processes
(tests/ is on their PYTHONPATH)."""
from __future__ import annotations

import contextlib
import os
import signal
import time
import zlib
from pathlib import Path

import numpy as np

from extractors.base import Extractor, Item
from extractors.runner import register_extractor


class KillOnce(Extractor):
    """Values from the item id. The first worker to reach item ``kill_at`` kills its own process
    (SIGKILL, as a lost node or the OOM killer would), once: a marker file remembers it."""

    name = "kill_once"
    kind = "meta"
    defaults = {"dim": 4, "kill_at": "", "marker": ""}

    def prepare(self, item: Item):
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items):
        marker = Path(self.options["marker"]) if self.options["marker"] else None
        if marker is not None and self.options["kill_at"] in batch and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        rng = [np.random.default_rng(zlib.crc32(i.encode())) for i in batch]
        return np.stack([r.standard_normal(self.options["dim"]) for r in rng]).astype(np.float32)


register_extractor(KillOnce, dim="4")


class FailSome(Extractor):
    """Values from the item id; ``compute`` fails for the items whose id starts with ``bad`` (a block of
    items the model cannot take, say images too large for the GPU, that one generator made)."""

    name = "fail_some"
    kind = "meta"
    defaults = {"dim": 4, "bad": ""}

    def prepare(self, item: Item):
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def feature_names(self, dim: int) -> list[str]:
        return [f"crc_normal_{i}" for i in range(dim)]

    def compute(self, batch, items):
        if any(i.startswith(str(self.options["bad"])) for i in batch):
            raise RuntimeError("CUDA out of memory")
        rng = [np.random.default_rng(zlib.crc32(i.encode())) for i in batch]
        return np.stack([r.standard_normal(self.options["dim"]) for r in rng]).astype(np.float32)


register_extractor(FailSome, dim="4")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@contextlib.contextmanager
def ray_worker_env(**extra: str):
    """The environment variables of the tests' Ray workers (for ``runtime_env``), with Ray starting
    them at nice 0, not 15: on a busy CI machine they would crawl behind every other job."""
    before = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        yield {"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
    finally:
        if before is None:
            os.environ.pop("RAY_worker_niceness", None)
        else:
            os.environ["RAY_worker_niceness"] = before


def features(data, store, extractors, *extra) -> int:
    """``python -m extractors run`` on the demo data, small batches, one thread, no progress bar."""
    from extractors.__main__ import main as ex_main

    return ex_main(["run", "--track", "image", "--data", str(data), "--extractors", extractors, "--store", str(store),
                    "--batch-size", "4", "--workers", "0", "--threads", "1", "--no-progress", *extra])


def _claim(marker: Path, text: str) -> bool:
    """Create ``marker`` holding ``text`` unless it exists: True for the one process that made it."""
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class StallOnce(Extractor):
    """Values from the item id, under real feature names, ``sleep`` seconds per batch (so every worker
    gets shards). The first Ray worker on a node other than ``avoid`` (the head) to compute a batch
    writes its node id to ``marker`` and stalls, so that the test can take its node away mid-shard;
    with ``marker`` present nothing stalls."""

    name = "stall_once"
    kind = "meta"
    defaults = {"dim": 4, "marker": "", "avoid": "", "sleep": 0.0}

    def prepare(self, item: Item):
        return item.item_id

    def collate(self, prepared):
        return list(prepared)

    def feature_names(self, dim: int) -> list[str]:
        return [f"crc_normal_{i}" for i in range(dim)]

    def compute(self, batch, items):
        node, marker = _node_id(), self.options["marker"]
        if marker and node not in (None, self.options["avoid"]) and not Path(marker).exists() and \
                _claim(Path(marker), node):
            time.sleep(600)  # until the node is removed
        time.sleep(float(self.options["sleep"]))
        rng = [np.random.default_rng(zlib.crc32(i.encode())) for i in batch]
        return np.stack([r.standard_normal(self.options["dim"]) for r in rng]).astype(np.float32)


register_extractor(StallOnce, dim="4")


def stall_then_call(fn, blas_threads, *args):
    """``regressors.ray_tasks._call`` as the tests' Ray pool runs it: the first task on a node other
    than the head (``STALL_AVOID``) writes its node id to ``STALL_MARKER`` and stalls until the test
    removes that node; the task runs again elsewhere, where it calls the real ``_call``."""
    from regressors.ray_tasks import _call

    marker, node = os.environ.get("STALL_MARKER", ""), _node_id()
    if marker and not Path(marker).exists():
        if node == os.environ.get("STALL_AVOID"):
            time.sleep(1.0)  # Ray keeps short tasks on the driver's node while it has room: make it full
        elif node is not None and _claim(Path(marker), node):
            time.sleep(600)
    return _call(fn, blas_threads, *args)


def store_content(path) -> dict:
    """What two stores must share to hold the same features (timestamps and timings aside)."""
    from features_store.store import FeatureStore

    out = {}
    with FeatureStore(path, mode="r") as st:
        df = st.df
        out["manifest"] = df.astype(str).to_dict("list")
        for key in st.keys():
            c = st.config(key)
            vals = st.read(key, dtype=None)
            out[key] = {"identity": c["identity"], "dim": c["dim"], "dtype": c["dtype"],
                        "names": st.feature_names(key), "status": st.status(key).tolist(),
                        "errors": st.errors(key).to_dict("list"), "bytes": vals.tobytes()}
    return out


def cwd() -> str:
    """The working folder of the process running this (a Ray task, in tests/test_ray_cluster.py)."""
    return os.getcwd()


def sees_on_the_head_only(path: str) -> bool:
    """``regressors.ray_tasks._sees`` as on a cluster whose worker nodes do not share the driver's disk."""
    return os.environ.get("STALL_AVOID") == _node_id() and os.path.isfile(path)
