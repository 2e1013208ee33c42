"""DINOv2 (transformers) features: the CLS token and the mean of the patch tokens.

Both come from the last hidden state after DINOv2's final layer norm (the CLS token is
what ``pooler_output`` returns; register tokens, in ``*-with-registers`` checkpoints,
are left out of the patch mean). Output: [CLS (H) | mean patch (H)].

Preprocessing is the checkpoint's own image processor (AutoImageProcessor: for
facebook/dinov2-* resize the short side to 256 with bicubic, centre-crop 224, ImageNet
mean/std). ``size`` overrides the crop and scales the resize with it (518 -> short
side 592, crop 518), keeping the checkpoint's resize/crop ratio; ``size=None`` keeps
the processor exactly as shipped.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import library_versions
from .image_base import ImageExtractor
from .weights import resolve_pretrained

HIDDEN = {"small": 384, "base": 768, "large": 1024, "giant": 1536}


class DINOv2Features(ImageExtractor):
    name = "dinov2"
    uses_prompt = False  # pixels only
    version = "1"
    defaults = {"model": "facebook/dinov2-base", "revision": None, "size": 224}
    packages = ImageExtractor.packages + ("transformers",)
    needs = "transformers + facebook/dinov2-*"
    local_options = {"model": "weights", "revision": "revision"}
    summary = "DINOv2 CLS token and mean patch token (self-supervised ViT)"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        size = self.options["size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 14):
            raise ValueError(f"dinov2: size must be an integer >= 14 (pixels) or None, got {size!r}")
        self._model = None
        self._processor = None
        self._proc_kwargs: dict | None = None

    # ------------------------------------------------------------------ config
    def output_dim(self) -> int | None:
        m = re.search(r"dinov2(?:-with-registers)?-(small|base|large|giant)$", str(self.options["model"]).rstrip("/"))
        return 2 * HIDDEN[m.group(1)] if m else None  # other checkpoints: the store learns it

    def feature_names(self, dim: int) -> list[str]:
        h = dim // 2
        return [f"dinov2_cls_{i}" for i in range(h)] + [f"dinov2_patch_{i}" for i in range(dim - h)]

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["libraries"] = library_versions(self.packages)
        ident["image_size"] = self.options["size"]
        return ident

    # -------------------------------------------------------------- processor
    def _path(self) -> str:
        return resolve_pretrained(self.options["model"], self.options["revision"])

    def processor(self):
        """The checkpoint's image processor and the per-call overrides for ``size``."""
        if self._processor is None:
            from transformers import AutoImageProcessor

            self._set_processor(AutoImageProcessor.from_pretrained(self._path()))
        return self._processor, self._proc_kwargs

    def _set_processor(self, proc) -> None:
        self._processor = proc
        self._proc_kwargs = overrides_for_size(proc, self.options["size"])

    def transform(self, image):
        proc, kwargs = self.processor()
        return proc(images=image, return_tensors="pt", **kwargs)["pixel_values"][0]

    # -------------------------------------------------------------- lifecycle
    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        from transformers import AutoImageProcessor, AutoModel

        path = self._path()
        model = AutoModel.from_pretrained(path)
        self._attach(model, AutoImageProcessor.from_pretrained(path))

    def _attach(self, model, processor) -> None:
        """Install a built model (setup, or the benchmark's random-weight copy)."""
        self._model = model.eval().requires_grad_(False).to(self.device)
        self._set_processor(processor)

    def __getstate__(self):  # DataLoader workers need the processor, not the model
        state = dict(self.__dict__)
        state.pop("_model", None)
        return state

    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            raise RuntimeError("dinov2: call setup() before embed()")
        hidden = self._model(pixel_values=pixels).last_hidden_state.float()
        n_reg = int(getattr(self._model.config, "num_register_tokens", 0) or 0)
        cls = hidden[:, 0]
        patches = hidden[:, 1 + n_reg:].mean(dim=1)
        return torch.cat([cls, patches], dim=1).cpu().numpy()


def overrides_for_size(proc, size: int | None) -> dict:
    """Processor call arguments that make its output ``size`` x ``size``.

    With a centre crop, the crop becomes ``size`` and the resize keeps the checkpoint's
    ratio (256/224 for DINOv2); without one, the resize target becomes ``size``.
    """
    if size is None:
        return {}
    resize = dict(getattr(proc, "size", None) or {})
    crop = dict(getattr(proc, "crop_size", None) or {})
    if getattr(proc, "do_center_crop", False) and crop.get("height"):
        ratio = (resize.get("shortest_edge") or crop["height"]) / crop["height"]
        kwargs = {"crop_size": {"height": size, "width": size}}
        if "shortest_edge" in resize:
            kwargs["size"] = {"shortest_edge": int(round(size * ratio))}
        else:
            kwargs["size"] = {"height": int(round(size * ratio)), "width": int(round(size * ratio))}
        return kwargs
    return {"size": {"height": size, "width": size}}
