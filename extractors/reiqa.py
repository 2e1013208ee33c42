"""`reiqa`: Re-IQA content- and quality-aware ResNet-50 features (Saha, Mishra, Bovik, CVPR 2023).

Follows the authors' demo scripts (avinabsaha/ReIQA ``demo_content_aware_feats.py`` and
``demo_quality_aware_feats.py``):

* each checkpoint is a PyContrast/MoCo-v2 dict whose ``'model'`` entry is the state of
  ``DataParallel(RGBSingleHead)``: keys ``module.encoder.<torchvision ResNet-50 names>``
  (plus the contrastive ``module.head.*``, unused here). The encoder is a standard
  ResNet-50 without ``fc``: the 2,048-d global-average-pooled output is the feature.
* the input is the whole image at its own resolution (no resize, no crop) and a
  half-scale copy, ``image.resize((w // 2, h // 2))`` (Pillow's default bicubic filter);
  each encoder's features are ``cat(feat(full), feat(half))`` = 4,096-d.
* the content encoder sees ImageNet-normalised pixels; the quality encoder sees plain
  ``ToTensor`` pixels in [0, 1] (the quality demo does not normalise).

Output (default ``encoders=[content, quality]``): content_full ‖ content_half ‖
quality_full ‖ quality_half = 8,192 floats.

Because the two scales are made with PIL (as the demos do) and not by tensor
interpolation, ``transform`` packs both into one tensor [3, H + H//2, W]: the full image
on top, the half-scale image in the bottom-left corner, zeros elsewhere. ``embed``
unpacks it. Images of different sizes cannot be stacked, so ``collate`` returns a list
and ``compute`` runs one forward pass per distinct size.

The weights are not downloadable here: pass local paths (``content_ckpt``,
``quality_ckpt``), files from the links in the Re-IQA README.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from .base import ItemError, WeightsNotFoundError, autocast_context
from .image_base import ImageExtractor
from .weights import load_state_exactly

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENCODERS = ("content", "quality")
CKPT_OPTION = {"content": "content_ckpt", "quality": "quality_ckpt"}
CKPT_FILE = {"content": "content_aware_r50.pth", "quality": "quality_aware_r50.pth"}
FEATURE_DIM = 2048  # ResNet-50 pooled width
WHERE = (
    "Download {file} from the links in https://github.com/avinabsaha/ReIQA (README, "
    "'reiqa_ckpts/') on a machine with access and pass its local path as the option "
    "{option}=/path/to/{file}."
)


def encoder_state_dict(checkpoint: Any, path: str) -> dict:
    """The ResNet-50 encoder's tensors from a Re-IQA/PyContrast checkpoint.

    Accepts ``{'model': state}`` (the released files) or a bare state dict, with or
    without the ``module.`` prefix DataParallel adds; keeps ``encoder.*`` only.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint dict with a 'model' state dict, got {type(checkpoint).__name__}")
    out = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("encoder."):
            out[k[len("encoder."):]] = value
    if not out:
        sample = ", ".join(list(state)[:5])
        raise ValueError(f"{path}: no 'encoder.*' / 'module.encoder.*' keys (first keys: {sample}); not a Re-IQA checkpoint?")
    return out


def load_checkpoint(path: str, allow_pickle: bool = False) -> Any:
    """torch.load with weights_only=True; PyContrast also pickles its argparse options,
    so argparse.Namespace is allow-listed. Anything else needs allow_pickle=True."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise RuntimeError(
                f"{path} holds Python objects that weights_only loading refuses ({err}). If you trust "
                "the file, pass allow_pickle=True to load it with full unpickling."
            ) from err
        return torch.load(path, map_location="cpu", weights_only=False)


def build_encoder(state: dict, path: str):
    """torchvision ResNet-50 with fc removed, loaded strictly from ``state``."""
    import torch
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    return load_state_exactly(net, state, f"{path}: encoder does not match torchvision resnet50").eval()


def split_scales(packed):
    """Inverse of the packing done by ``transform``: [B,3,H+H//2,W] -> (full, half)."""
    total, width = packed.shape[-2], packed.shape[-1]
    height = (2 * total + 1) // 3
    if height + height // 2 != total:
        raise ValueError(f"tensor of height {total} is not a packed full+half-scale image")
    return packed[..., :height, :], packed[..., height:, : width // 2]


class ReIQAFeatures(ImageExtractor):
    name = "reiqa"
    uses_prompt = False  # pixels only
    version = "1"
    defaults = {
        "content_ckpt": None,  # local path to content_aware_r50.pth
        "quality_ckpt": None,  # local path to quality_aware_r50.pth
        "encoders": list(ENCODERS),  # which encoders, in output order
        "max_side": None,  # None: native resolution (as the demos); else downscale the longer side
        "allow_pickle": False,  # full unpickling of a checkpoint weights_only refuses
    }
    needs = "torchvision + Re-IQA checkpoints (local paths)"
    local_options = {"content_ckpt": "path", "quality_ckpt": "path", "allow_pickle": "code"}
    summary = "Re-IQA content + quality ResNet-50 features, full + half scale (8192)"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        enc = self.options["encoders"]
        if isinstance(enc, str):
            enc = [enc]
        bad = [e for e in enc if e not in ENCODERS]
        if not enc or bad or len(set(enc)) != len(enc):
            raise ValueError(f"reiqa: encoders must be a non-empty subset of {list(ENCODERS)}, got {enc!r}")
        self.options["encoders"] = list(enc)

    # ------------------------------------------------------------------ identity
    def output_dim(self) -> int:
        return 2 * FEATURE_DIM * len(self.options["encoders"])

    def feature_names(self, dim: int) -> list[str]:
        return [
            f"reiqa_{enc}_{scale}_{i}"
            for enc in self.options["encoders"]
            for scale in ("full", "half")
            for i in range(FEATURE_DIM)
        ]

    def identity_options(self, options=None) -> dict:
        # a checkpoint by its content (name and sha256), never its path: the same file gives the same key anywhere;
        # a folder stands for the checkpoint file inside it
        opts = dict(self.options if options is None else options)
        for enc, option in CKPT_OPTION.items():
            path = opts.get(option)
            if path and os.path.isdir(os.path.expanduser(str(path))):
                opts[option] = os.path.join(os.path.expanduser(str(path)), CKPT_FILE[enc])
        return super().identity_options(opts)

    def identity(self) -> dict:
        ident = super().identity()
        ident["input"] = {"scales": ["full", "half"], "max_side": self.options["max_side"], "half_resample": "PIL bicubic"}
        return ident

    # ------------------------------------------------------------------ weights
    def checkpoint_path(self, enc: str) -> str:
        option = CKPT_OPTION[enc]
        path = self.options[option]
        if not path:
            raise WeightsNotFoundError(
                f"reiqa: no {enc}-aware checkpoint given (option {option} is None). "
                + WHERE.format(file=CKPT_FILE[enc], option=option)
            )
        path = os.path.expanduser(str(path))
        if os.path.isdir(path):
            path = os.path.join(path, CKPT_FILE[enc])
        if not os.path.isfile(path):
            raise WeightsNotFoundError(
                f"reiqa: weights not found: {path} does not exist. " + WHERE.format(file=CKPT_FILE[enc], option=option)
            )
        return path

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        import torch

        paths = {enc: self.checkpoint_path(enc) for enc in self.options["encoders"]}  # all errors before loading
        self.nets = {}
        for enc, path in paths.items():
            state = encoder_state_dict(load_checkpoint(path, bool(self.options["allow_pickle"])), path)
            self.nets[enc] = build_encoder(state, path).to(device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    # ------------------------------------------------------------ preprocessing
    def transform(self, image):
        """PIL RGB -> packed [3, H + H//2, W]: full image on top, half-scale below-left."""
        import torch
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        max_side = self.options["max_side"]
        w, h = image.size
        if max_side and max(w, h) > int(max_side):
            scale = int(max_side) / max(w, h)
            image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            w, h = image.size
        if w < 2 or h < 2:
            raise ItemError(f"image of {w}x{h} pixels is too small for a half-scale copy (Re-IQA needs at least 2x2)")
        half = image.resize((w // 2, h // 2), Image.BICUBIC)  # Pillow's default filter, as in the demos
        packed = torch.zeros(3, h + h // 2, w)
        packed[:, :h] = to_tensor(image)
        packed[:, h:, : w // 2] = to_tensor(half)
        return packed

    def collate(self, prepared: list) -> Any:
        shapes = {tuple(p.shape) for p in prepared}
        if len(shapes) == 1:
            import torch

            return torch.stack(prepared)
        return list(prepared)  # mixed sizes: compute() groups them

    # ------------------------------------------------------------------ forward
    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        import torch

        full, half = split_scales(pixels)
        outs = []
        for enc in self.options["encoders"]:
            net = self.nets[enc]
            for x in (full, half):
                if enc == "content":
                    x = (x - self._mean) / self._std
                outs.append(net(x).float())
        return torch.cat(outs, dim=1).cpu().numpy().astype(np.float32)

    def compute(self, batch, items) -> np.ndarray:
        if not isinstance(batch, list):
            return super().compute(batch, items)
        import torch

        out = np.zeros((len(batch), self.output_dim()), dtype=np.float32)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(batch):
            groups.setdefault(tuple(t.shape), []).append(i)
        for idx in groups.values():
            stacked = torch.stack([batch[i] for i in idx])
            with torch.inference_mode(), autocast_context(self.device, self.precision):
                out[idx] = self.embed(stacked.to(self.device, non_blocking=True), [items[i].prompt for i in idx])
        return out
