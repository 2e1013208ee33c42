"""``temporal_consistency``: how stable a video's content is, through any image model.

Why: generated videos drift (the subject morphs, the scene jumps, frames glitch).
VBench's subject/background consistency measures this with DINO/CLIP frame
similarities; we do the same over any registered image extractor (``base``, built with
``extractors.registry.get_extractor``): embed ``n_frames`` uniformly sampled frames
and compare neighbours with cosine similarity.

Output (6 values, see :data:`CONSISTENCY_FEATURES`). A *sharp drop* is a neighbour
similarity more than ``drop_threshold`` below the video's own median neighbour
similarity: relative, so one threshold works across base models whose typical
similarities differ (CLIP frames ~0.9, a CNN's pooled features lower).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Item, config_hash
from .image_base import OverFrames
from .media import frames_identity

CONSISTENCY_FEATURES: dict[str, str] = {
    "sim_mean": "mean cosine similarity of consecutive frame embeddings",
    "sim_min": "lowest consecutive similarity (worst transition)",
    "sim_std": "std of consecutive similarities",
    "n_drops": "number of consecutive similarities below median - drop_threshold",
    "first_last": "cosine similarity of the first and last sampled frames (long-range drift)",
    "to_centroid": "mean cosine similarity of each frame to the mean embedding (VBench-style consistency)",
}


def consistency_statistics(emb, drop_threshold: float = 0.1) -> np.ndarray:
    """[T, D] frame embeddings (numpy or torch) -> float32 [6] (:data:`CONSISTENCY_FEATURES`).

    A single frame gives similarity 1 and no drops (nothing changes)."""
    e = np.asarray(emb.detach().float().cpu() if hasattr(emb, "detach") else emb, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 1:
        raise ValueError(f"consistency_statistics: need [T, D] embeddings, got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    u = e / np.maximum(norms, 1e-12)
    if e.shape[0] == 1:
        return np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    sims = np.sum(u[1:] * u[:-1], axis=1)
    drops = int(np.sum(sims < np.median(sims) - drop_threshold))
    centroid = u.mean(axis=0)
    centroid /= max(np.linalg.norm(centroid), 1e-12)
    return np.array([sims.mean(), sims.min(), sims.std(), drops, float(u[0] @ u[-1]), float((u @ centroid).mean())],
                    dtype=np.float32)


class TemporalConsistency(OverFrames):
    name = "temporal_consistency"
    version = "1"
    defaults = {
        "base": "effnet_lite0",  # any image extractor name (clip, dinov2, effnet_lite0, ...)
        "base_options": {},
        "n_frames": 16,
        "sampling": "uniform",
        "drop_threshold": 0.1,  # below the video's median neighbour similarity by this much = a sharp drop
        "frame_batch": 64,  # frames per forward pass of the base (memory only; results unchanged)
    }
    packages = ("numpy", "torch", "av")
    needs = "the base extractor's needs"
    summary = "cosine similarity of consecutive frame embeddings: mean, min, std, drops, drift"

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in self.options.items() if k != "frame_batch"}
        # the base's local files by content, as its own identity holds them (a path never enters a key)
        ident["options"]["base_options"] = self.base.identity_options(self.options["base_options"] or {})
        ident["frames"] = frames_identity(self.options["n_frames"], self.options["sampling"])
        base = self.base
        base.precision = self.precision  # the base runs at our precision
        ident["base"] = base.identity()
        return ident

    def key(self) -> str:
        """``temporal_consistency.<base>-<hash>``: the base is readable in the store."""
        return f"{self.name}.{self.base.name}-{config_hash(self.identity())}"

    @property
    def uses_prompt(self) -> bool:  # type: ignore[override]
        return self.base.uses_prompt

    def output_dim(self) -> int:
        return len(CONSISTENCY_FEATURES)

    def feature_names(self, dim: int) -> list[str]:
        return [f"{self.name}_{k}" for k in CONSISTENCY_FEATURES]

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        if self.options["sampling"] not in ("uniform", "all") or int(self.options["n_frames"]) < 2:
            raise ValueError(f"temporal_consistency: need sampling 'uniform'/'all' and n_frames >= 2, got "
                             f"{self.options['sampling']!r}, {self.options['n_frames']!r}")
        self.base.setup(device, precision)
        super().setup(device, self.base.precision)  # a base may insist on its own precision

    def collate(self, prepared: list[Any]) -> list[Any]:
        return list(prepared)  # frame counts differ for clips shorter than n_frames

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        # All frames of the batch in one forward pass (each frame carries its video's prompt).
        counts = [int(f.shape[0]) for f in batch]
        prompts = [it.prompt for it, n in zip(items, counts) for _ in range(n)]
        emb = self.embed_frames(torch.cat(list(batch)), prompts)
        thr = float(self.options["drop_threshold"])
        bounds = np.cumsum([0] + counts)
        rows = [consistency_statistics(emb[a:b], thr) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.stack(rows).astype(np.float32)
