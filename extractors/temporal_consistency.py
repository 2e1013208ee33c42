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

from .base import Extractor, Item, ItemError, autocast_context, config_hash
from .image_base import build_image_base
from .media import frames_identity, read_video_frames

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


class TemporalConsistency(Extractor):
    name = "temporal_consistency"
    kind = "video"
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

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._base = None

    @property
    def base(self):
        """The image extractor, built on first use (``__init__`` only stores options)."""
        if self._base is None:
            base = build_image_base("temporal_consistency", self.options["base"], self.options["base_options"])
            if not hasattr(base, "transform") or not hasattr(base, "embed"):
                raise ValueError(f"temporal_consistency: base {self.options['base']!r} must be an image extractor "
                                 "with transform/embed (an extractors.image_base.ImageExtractor)")
            self._base = base
        return self._base

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in self.options.items() if k != "frame_batch"}
        ident["frames"] = frames_identity(self.options["n_frames"], self.options["sampling"])
        base = self.base
        base.precision = self.precision  # the base runs at our precision
        ident["base"] = base.identity()
        return ident

    def key(self) -> str:
        """``temporal_consistency.<base>-<hash>``: the base is readable in the store."""
        return f"{self.name}.{self.base.name}-{config_hash(self.identity())}"

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

    def prepare(self, item: Item):
        """float [T, C, H, W]: the base's own transform of each sampled frame."""
        import torch
        from PIL import Image

        frames = read_video_frames(item.path, self.options["n_frames"], self.options["sampling"])
        try:
            return torch.stack([self.base.transform(Image.fromarray(f)) for f in frames])
        except Exception as err:
            raise ItemError(f"{item.item_id}: base {self.options['base']!r} cannot transform frames of "
                            f"{item.path}: {type(err).__name__}: {err}") from err

    def collate(self, prepared: list[Any]) -> list[Any]:
        return list(prepared)  # frame counts differ for clips shorter than n_frames

    def embeddings(self, frames, prompts: list[str]):
        """[N, C, H, W] frames + one prompt per frame -> float32 numpy [N, D], frame_batch at a time."""
        import torch

        step = max(1, int(self.options["frame_batch"]))
        out = []
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for a in range(0, frames.shape[0], step):
                chunk = frames[a: a + step].to(self.device, non_blocking=True)
                out.append(np.asarray(self.base.embed(chunk, prompts[a: a + step]), dtype=np.float32))
        return np.concatenate(out)

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        # All frames of the batch in one forward pass (each frame carries its video's prompt).
        counts = [int(f.shape[0]) for f in batch]
        prompts = [it.prompt for it, n in zip(items, counts) for _ in range(n)]
        emb = self.embeddings(torch.cat(list(batch)), prompts)
        thr = float(self.options["drop_threshold"])
        bounds = np.cumsum([0] + counts)
        rows = [consistency_statistics(emb[a:b], thr) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.stack(rows).astype(np.float32)
