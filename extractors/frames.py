"""Any image extractor over video frames, pooled per video (mean ‖ std ‖ mean |Δ|).

``frames:base=effnet_lite0:n_frames=8`` decodes 8 uniformly spaced frames with PyAV,
runs the base extractor's ``transform`` on each frame in the DataLoader worker, its
``embed`` on all frames of the batch (in chunks of ``frame_batch``) and pools each
video's [T, D] frame features into 3·D values:

* ``mean``: average over frames (what the clip looks like),
* ``std``: standard deviation over frames (population, ddof=0; how much it changes),
* ``dabs``: mean absolute difference between consecutive frames (temporal jitter:
  flicker moves it, a slow smooth change barely does). 0 for a one-frame clip.

Bases that compute their vector in ``transform`` (``nss``) work unchanged: their
``embed`` passes the vectors through. The store key is ``frames.<base>-<hash>``, the
hash covering the base's identity, the frame sampling and this code's version.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Item, config_hash, library_versions
from .image_base import OverFrames
from .media import frames_identity

POOLS = ("mean", "std", "dabs")


class FramePooled(OverFrames):
    """An image extractor run on N frames of each video, pooled to mean ‖ std ‖ mean |Δ|."""

    name = "frames"
    version = "1"
    defaults = {"base": "effnet_lite0", "base_options": {}, "n_frames": 8, "sampling": "uniform",
                "frame_batch": 64}
    packages = ("numpy", "av")
    needs = "the base extractor's needs"
    summary = "image extractor over N video frames, pooled mean/std/mean|diff| (3*D)"

    def _sampling(self) -> dict:
        sampling = self.options["sampling"]
        if sampling not in ("uniform", "all"):
            raise ValueError(f"frames: sampling must be 'uniform' or 'all', got {sampling!r}")
        n = int(self.options["n_frames"])
        if sampling == "uniform" and n < 1:
            raise ValueError(f"frames: n_frames must be >= 1, got {n}")
        return frames_identity(n if sampling == "uniform" else 0, sampling)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        # frame_batch changes speed, not numbers: it stays out. The base enters with its
        # full identity (defaults filled in), so spelling out a default changes nothing.
        return {
            "name": self.name,
            "version": self.version,
            "sampling": self._sampling(),
            "pooling": list(POOLS),
            "base": self.base.identity(),
            "precision": self.base.precision,
            "libraries": library_versions(self.packages),
        }

    def key(self) -> str:
        return f"frames.{self.base.name}-{config_hash(self.identity())}"

    @classmethod
    def options_from_identity(cls, identity: dict[str, Any]) -> dict[str, Any]:
        base = identity["base"]
        sampling = identity["sampling"]
        from .registry import extractor_class

        opts = {"base": base["name"], "base_options": extractor_class(base["name"]).options_from_identity(base),
                "sampling": sampling["sampling"]}
        if sampling["sampling"] == "uniform":
            opts["n_frames"] = int(sampling["n_frames"])
        return opts

    @property
    def uses_prompt(self) -> bool:  # type: ignore[override]
        return self.base.uses_prompt

    def output_dim(self) -> int | None:
        d = self.base.output_dim()
        return None if d is None else 3 * d

    def feature_names(self, dim: int) -> list[str]:
        names = self.base.feature_names(dim // 3)
        return [f"{pool}_{n}" for pool in POOLS for n in names]

    # ------------------------------------------------------------------ lifecycle
    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        self._sampling()  # refuse bad options before any work
        self.base.setup(device, precision)
        super().setup(device, self.base.precision)

    def collate(self, prepared: list) -> tuple:
        """All frames of the batch in one tensor + the frame count of each video."""
        import torch

        return torch.cat(prepared), [int(p.shape[0]) for p in prepared]

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        frames, lengths = batch
        if sum(lengths) != frames.shape[0] or len(lengths) != len(items):
            raise ValueError("frames: batch does not match its items (use FramePooled.collate)")
        prompts = [it.prompt for it, n in zip(items, lengths) for _ in range(n)]
        feats = self.embed_frames(frames, prompts, dtype=np.float64)
        rows, start = [], 0
        for n in lengths:
            rows.append(pool(feats[start : start + n]))
            start += n
        return np.stack(rows).astype(np.float32)


def pool(feats: np.ndarray) -> np.ndarray:
    """[T, D] -> [3D]: mean ‖ std ‖ mean |x_t+1 - x_t| (zeros for T = 1)."""
    diff = np.abs(np.diff(feats, axis=0)).mean(axis=0) if len(feats) > 1 else np.zeros(feats.shape[1])
    return np.concatenate([feats.mean(axis=0), feats.std(axis=0), diff])
