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
        return self.transform(load_image(item.path, allow_animated=self.allow_media_mismatch))

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
    if not hasattr(base, "transform") or not hasattr(base, "embed"):
        raise ValueError(f"{owner}: base {name!r} must be an image extractor with transform/embed "
                         "(an extractors.image_base.ImageExtractor)")
    return base


class OverFrames(Extractor):
    """A video extractor that runs an image extractor (option ``base``) over sampled frames.

    Shared by ``frames`` and ``temporal_consistency``: the base is built on first use
    (``__init__`` only stores options); ``prepare`` decodes ``n_frames`` frames with the
    option ``sampling`` and applies the base's ``transform`` to each (in the DataLoader
    workers); ``embed_frames`` runs the base's ``embed`` ``frame_batch`` frames at a time.
    """

    kind = "video"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._base = None

    @classmethod
    def strip_file_identities(cls, options: dict) -> dict:
        """The base's local files recorded by content are left unset too (see Extractor.strip_file_identities)."""
        from .registry import extractor_class

        options = super().strip_file_identities(options)
        if isinstance(options.get("base"), str) and isinstance(options.get("base_options"), dict):
            options["base_options"] = extractor_class(options["base"]).strip_file_identities(
                dict(options["base_options"]))
        return options

    @property
    def base(self) -> ImageExtractor:
        if self._base is None:
            self._base = build_image_base(self.name, self.options["base"], self.options["base_options"])
        return self._base

    def prepare(self, item: Item):
        """float [T, C, H, W]: the base's own transform of each sampled frame."""
        import torch
        from PIL import Image

        from .base import ItemError
        from .media import read_video_frames

        if not item.path:
            raise ItemError(f"item {item.item_id!r} has no video path")
        frames = read_video_frames(item.path, int(self.options["n_frames"]), self.options["sampling"],
                                   allow_still=self.allow_media_mismatch)
        try:
            return torch.stack([self.base.transform(Image.fromarray(f)) for f in frames])
        except Exception as err:
            raise ItemError(f"{item.item_id}: base {self.options['base']!r} cannot transform frames of "
                            f"{item.path}: {type(err).__name__}: {err}") from err

    def embed_frames(self, frames, prompts: list[str], dtype=np.float32) -> np.ndarray:
        """[N, C, H, W] frames + one prompt per frame -> numpy [N, D], ``frame_batch`` frames per forward pass."""
        import torch

        step = max(1, int(self.options["frame_batch"]))
        out = []
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for a in range(0, frames.shape[0], step):
                chunk = frames[a: a + step].to(self.device, non_blocking=True)
                out.append(np.asarray(self.base.embed(chunk, prompts[a: a + step]), dtype=dtype))
        return np.concatenate(out)
