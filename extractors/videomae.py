"""``videomae``: VideoMAE clip embeddings pooled over a video (transformers).

Why: a video transformer sees motion and temporal artefacts that per-frame image
models miss. VideoMAE has no CLS token; a clip's vector follows the checkpoint's config:

* ``use_mean_pooling=True`` (the Kinetics-finetuned checkpoints): mean of the encoder
  tokens, then the classifier's ``fc_norm`` LayerNorm when the checkpoint has one —
  exactly the vector the classification head reads;
* otherwise (self-supervised ``videomae-base``): the encoder's final LayerNorm is
  applied to every token, then the mean token.

Clips: the video is cut into ``n_clips`` equal, consecutive segments; each clip is
``config.num_frames`` (16) frames spread uniformly over its segment (frames repeat when
a segment is shorter; a 4 s T2VQA-DB video with 2 clips gives 2 s per clip, close to
Kinetics' 16 x 4-frame-stride sampling). Each frame is preprocessed as the checkpoint's
``VideoMAEImageProcessor`` does (shortest edge resize, bilinear + antialias on uint8,
centre crop, rescale, mean/std), which a test checks against the library.

Output (2·H): mean over clips ‖ std over clips of the clip vectors (std is 0 when
``n_clips=1``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Extractor, Item, ItemError, autocast_context
from .media import read_video_frames, stack_frames
from .weights import resolve_pretrained


def clip_indices(total: int, n_clips: int, clip_len: int) -> np.ndarray:
    """[n_clips, clip_len] frame indices: clip c samples the centres of clip_len equal
    sub-segments of the c-th of n_clips equal segments of [0, total)."""
    if total <= 0:
        raise ValueError("clip_indices: the video has no frames")
    seg = total / n_clips
    pos = (np.arange(n_clips)[:, None] * seg) + (np.arange(clip_len)[None, :] + 0.5) * seg / clip_len
    return np.clip(pos.astype(int), 0, total - 1)


class VideoMAEPreprocess:
    """The checkpoint's VideoMAEImageProcessor settings, applied with torchvision.

    Split in two so DataLoader workers ship uint8 (4x less than float):
    :meth:`geometry` (resize + crop, uint8) in the worker, :meth:`normalize` on the device.
    """

    def __init__(self, processor) -> None:
        from transformers.image_utils import PILImageResampling

        size = dict(processor.size or {})
        crop = dict(processor.crop_size or {}) if getattr(processor, "do_center_crop", True) else {}
        self.do_resize = bool(getattr(processor, "do_resize", True))
        self.shortest_edge = size.get("shortest_edge")
        self.fixed = (size["height"], size["width"]) if "height" in size and "width" in size else None
        if self.do_resize and self.shortest_edge is None and self.fixed is None:
            raise ValueError(f"videomae: unsupported processor size {size!r} (need shortest_edge or height/width)")
        self.crop = (crop["height"], crop["width"]) if crop else None
        resample = getattr(processor, "resample", PILImageResampling.BILINEAR)
        self.interpolation = self._interp(resample)
        self.do_rescale = bool(getattr(processor, "do_rescale", True))
        self.rescale_factor = float(getattr(processor, "rescale_factor", 1 / 255))
        self.do_normalize = bool(getattr(processor, "do_normalize", True))
        self.mean = [float(v) for v in processor.image_mean]
        self.std = [float(v) for v in processor.image_std]

    @staticmethod
    def _interp(resample):
        from torchvision.transforms.v2 import functional as tvF

        if isinstance(resample, tvF.InterpolationMode):
            return resample
        names = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
        return getattr(tvF.InterpolationMode, names.get(int(resample), "BILINEAR"))

    def describe(self) -> dict:
        return {"shortest_edge": self.shortest_edge, "fixed": self.fixed, "crop": self.crop,
                "interpolation": self.interpolation.value, "mean": self.mean, "std": self.std}

    def geometry(self, frames_u8):
        """uint8 [T, 3, H, W] -> uint8 [T, 3, h, w]: resize then centre crop."""
        from torchvision.transforms.v2 import functional as tvF

        x = frames_u8
        if self.do_resize:
            h, w = x.shape[-2:]
            if self.fixed is not None:
                new = list(self.fixed)
            else:  # shorter side -> shortest_edge, longer side truncated (as transformers does)
                s = self.shortest_edge
                new = [s, int(s * w / h)] if h <= w else [int(s * h / w), s]
            x = tvF.resize(x, new, interpolation=self.interpolation, antialias=True)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:  # pad like the library, then crop
                pad = [(cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0,
                       (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0]
                x = tvF.pad(x, pad, fill=0)
                h, w = x.shape[-2:]
            x = tvF.crop(x, int((h - ch) / 2.0), int((w - cw) / 2.0), ch, cw)
        return x

    def normalize(self, x_u8):
        """uint8 [..., 3, h, w] -> float32, rescaled and normalised per channel."""
        import torch

        x = x_u8.float()
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            shape = [1] * (x.dim() - 3) + [3, 1, 1]
            mean = torch.tensor(self.mean, device=x.device).view(shape)
            std = torch.tensor(self.std, device=x.device).view(shape)
            x = (x - mean) / std
        return x


class VideoMAEFeatures(Extractor):
    name = "videomae"
    uses_prompt = False  # pixels only
    kind = "video"
    version = "1"
    defaults = {
        "model": "MCG-NJU/videomae-base-finetuned-kinetics",  # hub id or local folder
        "revision": None,
        "n_clips": 2,  # consecutive equal segments, one clip each
        "clip_batch": 8,  # clips per forward pass (memory only; results unchanged)
    }
    packages = ("numpy", "torch", "torchvision", "transformers", "av")
    needs = "transformers + MCG-NJU/videomae-* (hub cache or local folder)"
    local_options = {"model": "weights", "revision": "revision"}
    summary = "VideoMAE mean-token clip embeddings, mean and std over clips"

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k != "clip_batch"}
        ident["frames"] = {"decoder": "pyav", "clips": "equal segments, uniform within"}
        return ident

    def feature_names(self, dim: int) -> list[str]:
        h = dim // 2
        return [f"{self.name}_mean_{i}" for i in range(h)] + [f"{self.name}_std_{i}" for i in range(h)]

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Config, processor settings and model (main process and, for prepare, workers)."""
        if getattr(self, "preprocess", None) is not None:
            return
        from transformers import VideoMAEConfig, VideoMAEImageProcessor

        n = int(self.options["n_clips"])
        if n < 1:
            raise ValueError(f"videomae: n_clips must be >= 1, got {n}")
        path = resolve_pretrained(self.options["model"], self.options["revision"])
        self.path = path
        self.config = VideoMAEConfig.from_pretrained(path)
        self.preprocess = VideoMAEPreprocess(VideoMAEImageProcessor.from_pretrained(path))
        self.clip_len = int(self.config.num_frames)

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        from transformers import VideoMAEForVideoClassification, VideoMAEModel

        self.load()
        self.fc_norm = None
        archs = self.config.architectures or []
        if self.config.use_mean_pooling and "VideoMAEForVideoClassification" in archs:
            full = VideoMAEForVideoClassification.from_pretrained(self.path)
            self.model, self.fc_norm = full.videomae, full.fc_norm
        else:
            self.model = VideoMAEModel.from_pretrained(self.path)
        self.model.to(device).eval()
        if self.fc_norm is not None:
            self.fc_norm.to(device).eval()
        self.hidden = int(self.config.hidden_size)

    def output_dim(self) -> int | None:
        return 2 * self.hidden if hasattr(self, "hidden") else None

    # ------------------------------------------------------------------ runner
    def prepare(self, item: Item):
        """uint8 [n_clips, clip_len, 3, h, w] (resize + crop done here, in the worker)."""
        import torch

        self.load()
        frames = read_video_frames(item.path, 0, "all", allow_still=self.allow_media_mismatch)
        idx = clip_indices(len(frames), int(self.options["n_clips"]), self.clip_len)
        x = torch.from_numpy(stack_frames(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]
        try:
            x = self.preprocess.geometry(x[torch.from_numpy(idx.reshape(-1))].contiguous())
        except Exception as err:
            raise ItemError(f"{item.item_id}: cannot preprocess frames of {item.path}: {err}") from err
        return x.reshape(idx.shape[0], idx.shape[1], *x.shape[1:])

    def clip_vectors(self, clips_u8):
        """uint8 [N, clip_len, 3, h, w] -> float32 [N, H] (one vector per clip)."""
        import torch

        out = []
        cb = max(1, int(self.options["clip_batch"]))
        with torch.inference_mode():
            for i in range(0, clips_u8.shape[0], cb):
                x = self.preprocess.normalize(clips_u8[i: i + cb].to(self.device, non_blocking=True))
                with autocast_context(self.device, self.precision):
                    tokens = self.model(pixel_values=x).last_hidden_state
                v = tokens.float().mean(dim=1)
                if self.fc_norm is not None:
                    v = self.fc_norm(v)
                out.append(v.float())
        return torch.cat(out)

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        b, c = batch.shape[:2]
        v = self.clip_vectors(batch.reshape(b * c, *batch.shape[2:])).reshape(b, c, -1)
        rows = torch.cat([v.mean(dim=1), v.std(dim=1, unbiased=False)], dim=1)
        return rows.cpu().numpy().astype(np.float32)
