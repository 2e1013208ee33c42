"""Helpers for tests/test_ray.py, importable by Ray worker processes (tests/ is on their PYTHONPATH)."""
from __future__ import annotations

import os
import signal
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
