"""Image extractors: preprocessing and forward pass kept apart.

Splitting ``transform`` (per image, in DataLoader workers) from ``embed`` (per batch,
on the device) is what lets ``frames`` run any image model over video frames, and
lets tests compare ``transform`` with the checkpoint's own processor.
"""
from __future__ import annotations

import numpy as np

from .base import Extractor, Item, autocast_context
from .media import load_image


class ImageExtractor(Extractor):
    kind = "image"
    packages = ("numpy", "torch", "torchvision", "pillow")

    def transform(self, image) -> "torch.Tensor":  # noqa: F821
        """PIL RGB image -> float tensor [C, H, W], exactly as the checkpoint expects."""
        raise NotImplementedError

    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        """[B, C, H, W] tensor (already on self.device) + prompts -> float32 [B, D]."""
        raise NotImplementedError

    # ---- runner protocol
    def prepare(self, item: Item):
        return self.transform(load_image(item.path))

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        with torch.inference_mode(), autocast_context(self.device, self.precision):
            out = self.embed(batch.to(self.device, non_blocking=True), [it.prompt for it in items])
        return np.asarray(out, dtype=np.float32)


def build_image_base(owner: str, name, options) -> ImageExtractor:
    """The image extractor that a video extractor (frames, temporal_consistency) runs over frames."""
    from .registry import get_extractor

    if not isinstance(name, str) or not name:
        raise ValueError(f"{owner}: option base must be an image extractor name, got {name!r}")
    base = get_extractor(name, **dict(options or {}))
    if base.kind != "image":
        raise ValueError(f"{owner}: base {name!r} is a {base.kind} extractor; it must read images (an image extractor)")
    return base
