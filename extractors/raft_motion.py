"""``raft_motion``: optical-flow motion statistics of a video (RAFT, torchvision).

Why: text-to-video models fail in time as much as in space (frozen clips, jitter,
flicker, warping objects). Two NTIRE 2024 video-track teams used flow directly: SQL
(flow magnitude and the photometric loss after warping) and UBC DSL (how consistent
the acceleration is). We summarise RAFT's flow between consecutive sampled frames into
the documented statistics of :data:`MOTION_FEATURES` (31 values).

Pipeline: ``n_frames`` frames sampled uniformly over the clip (PyAV), resized so the
shorter side is ``size`` and both sides are multiples of 8 (RAFT's requirement), flow
from frame t to t+1 for every consecutive pair, statistics in float32. Flow is in
pixels *at that working resolution*, so clips of any source size are comparable.

Weights: ``weights="default"`` is torchvision's release (``Raft_Large_Weights.DEFAULT``
/ ``Raft_Small_Weights.DEFAULT``), used from the torch hub cache (``$TORCH_HOME``) and
downloaded only when not offline; any other value is a local ``.pth`` state dict
(e.g. saved from ``raft_small(weights=...)``).

The statistics (:func:`motion_statistics`) take a flow tensor and the frames, so they
are tested with synthetic flows (translation, zoom, zero) independently of RAFT.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .base import Extractor, Item, ItemError, WeightsNotFoundError, autocast_context
from .media import frames_identity, read_video_frames, stack_frames
from .weights import hub_offline

#: name -> meaning; flow magnitudes are pixels per sampled-frame step at working resolution.
MOTION_FEATURES: dict[str, str] = {
    "mag_mean": "mean flow magnitude over pixels and pairs",
    "mag_std": "std of flow magnitude over pixels and pairs",
    "mag_p10": "10th percentile of flow magnitude",
    "mag_p25": "25th percentile of flow magnitude",
    "mag_p50": "median flow magnitude",
    "mag_p75": "75th percentile of flow magnitude",
    "mag_p90": "90th percentile of flow magnitude",
    "mag_p99": "99th percentile of flow magnitude",
    "mag_pair_max": "largest per-pair mean magnitude (burst of motion)",
    "mag_pair_std": "std over pairs of the per-pair mean magnitude (uneven motion)",
    "static_share": "share of pixels moving less than static_threshold px",
    "static_pair_share": "share of pairs whose mean magnitude is under static_threshold (frozen steps)",
    "accel_mean": "mean |f[t+1]-f[t]| per pixel (Eulerian acceleration; 0 with fewer than 2 pairs)",
    "accel_std": "std of |f[t+1]-f[t]|",
    "accel_p90": "90th percentile of |f[t+1]-f[t]|",
    "jerk_mean": "mean |f[t+2]-2f[t+1]+f[t]| (0 with fewer than 3 pairs)",
    "accel_rel": "accel_mean / mag_mean: acceleration relative to motion (inconsistency)",
    "global_mag_mean": "mean |median flow vector| per pair (camera-like translation)",
    "global_accel_mean": "mean change of the median flow vector between pairs (camera shake)",
    "zoom_abs_mean": "mean |divergence/2| of the per-pair affine fit (zoom rate, px/px)",
    "rotation_abs_mean": "mean |curl/2| of the per-pair affine fit (rotation rate, rad)",
    "local_mag_mean": "mean |flow - affine fit| (object motion beyond the camera)",
    "local_share": "sum |flow - affine|^2 / sum |flow|^2 (share of non-global motion)",
    "coherence": "mean over pairs of |mean flow vector| / mean |flow| (1 = one direction)",
    "warp_err_mean": "mean L1 error (0..1 RGB) of frame t+1 warped back onto frame t (SQL warp loss)",
    "warp_err_std": "std over pairs of the warp error",
    "warp_err_max": "largest per-pair warp error",
    "frame_diff_mean": "mean |frame t+1 - frame t| (0..1 RGB), no warping",
    "warp_ratio": "warp_err_mean / frame_diff_mean (how much of the change flow explains)",
    "flicker": "mean |change of mean luminance| between neighbours (0..1)",
    "out_of_view_share": "share of pixels whose flow leaves the frame",
}

_EPS = 1e-6


def _percentiles(x, qs):
    """Percentiles by sorting (torch.quantile refuses inputs above 16M elements)."""
    import torch

    s, _ = torch.sort(x.reshape(-1))
    n = s.numel()
    idx = torch.tensor([q / 100.0 * (n - 1) for q in qs], device=x.device)
    lo, hi = idx.floor().long(), idx.ceil().long()
    w = idx - lo
    return s[lo] * (1 - w) + s[hi] * w


def motion_statistics(flow, frames, static_threshold: float = 0.5):
    """Summarise flows into the :data:`MOTION_FEATURES` vector.

    flow: float tensor [P, 2, H, W], (dx, dy) in pixels from frame t to t+1, so that
    ``frames[t+1](x + flow[t](x)) ~ frames[t](x)``. frames: float tensor [P+1, 3, H, W]
    in 0..1 (same resolution). Returns float32 numpy [len(MOTION_FEATURES)].
    """
    import torch
    import torch.nn.functional as F

    flow = flow.float()
    frames = frames.float()
    P, _, H, W = flow.shape
    if P < 1 or frames.shape[0] != P + 1 or frames.shape[-2:] != (H, W):
        raise ValueError(f"motion_statistics: need flow [P,2,H,W] and frames [P+1,3,H,W]; got {tuple(flow.shape)}, "
                         f"{tuple(frames.shape)}")
    dev = flow.device
    zero = torch.zeros((), device=dev)
    out: dict[str, Any] = {}

    mag = flow.norm(dim=1)  # [P, H, W]
    out["mag_mean"] = mag.mean()
    out["mag_std"] = mag.std(unbiased=False)
    for q, v in zip((10, 25, 50, 75, 90, 99), _percentiles(mag, (10, 25, 50, 75, 90, 99))):
        out[f"mag_p{q}"] = v
    pair_mag = mag.mean(dim=(1, 2))
    out["mag_pair_max"] = pair_mag.max()
    out["mag_pair_std"] = pair_mag.std(unbiased=False)
    out["static_share"] = (mag < static_threshold).float().mean()
    out["static_pair_share"] = (pair_mag < static_threshold).float().mean()

    # Temporal change of flow at a fixed pixel (no motion compensation: cheap, and what
    # a smooth camera or object path keeps small).
    if P >= 2:
        acc = (flow[1:] - flow[:-1]).norm(dim=1)
        out["accel_mean"], out["accel_std"] = acc.mean(), acc.std(unbiased=False)
        out["accel_p90"] = _percentiles(acc, (90,))[0]
    else:
        out["accel_mean"] = out["accel_std"] = out["accel_p90"] = zero
    out["jerk_mean"] = (flow[2:] - 2 * flow[1:-1] + flow[:-2]).norm(dim=1).mean() if P >= 3 else zero
    out["accel_rel"] = out["accel_mean"] / (out["mag_mean"] + _EPS) if out["mag_mean"] > _EPS else zero

    # Global (camera) motion: median vector per pair, and an affine fit on a sub-grid.
    med = flow.flatten(2).median(dim=2).values  # [P, 2]
    out["global_mag_mean"] = med.norm(dim=1).mean()
    out["global_accel_mean"] = (med[1:] - med[:-1]).norm(dim=1).mean() if P >= 2 else zero
    step = max(1, min(H, W) // 64)
    ys = torch.arange(0, H, step, device=dev, dtype=torch.float32)
    xs = torch.arange(0, W, step, device=dev, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys - (H - 1) / 2, xs - (W - 1) / 2, indexing="ij")
    design = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones_like(gx).reshape(-1)], dim=1)  # [N,3]
    sub = flow[:, :, ::step, ::step].reshape(P, 2, -1)  # [P, 2, N]
    coef = torch.linalg.pinv(design) @ sub.transpose(1, 2)  # [P, 3, 2]: rows x, y, 1; cols u, v
    fit = (design @ coef).transpose(1, 2)  # [P, 2, N]
    resid = sub - fit
    a11, a12, a21, a22 = coef[:, 0, 0], coef[:, 1, 0], coef[:, 0, 1], coef[:, 1, 1]
    out["zoom_abs_mean"] = ((a11 + a22) / 2).abs().mean()
    out["rotation_abs_mean"] = ((a21 - a12) / 2).abs().mean()
    out["local_mag_mean"] = resid.norm(dim=1).mean()
    total = sub.pow(2).sum()
    out["local_share"] = resid.pow(2).sum() / total if total > _EPS else zero
    mean_vec = flow.mean(dim=(2, 3)).norm(dim=1)
    out["coherence"] = torch.where(pair_mag > _EPS, mean_vec / (pair_mag + _EPS), torch.zeros_like(pair_mag)).mean()

    # Photometric error after warping frame t+1 back onto frame t (SQL team's warp loss).
    yy, xx = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32),
                            torch.arange(W, device=dev, dtype=torch.float32), indexing="ij")
    tx, ty = xx + flow[:, 0], yy + flow[:, 1]
    inside = (tx >= 0) & (tx <= W - 1) & (ty >= 0) & (ty <= H - 1)  # [P, H, W]
    grid = torch.stack([2 * tx / max(W - 1, 1) - 1, 2 * ty / max(H - 1, 1) - 1], dim=-1)
    warped = F.grid_sample(frames[1:], grid, mode="bilinear", padding_mode="border", align_corners=True)
    err = (warped - frames[:-1]).abs().mean(dim=1)  # [P, H, W]
    valid = inside.float()
    pair_err = (err * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp_min(1)
    out["warp_err_mean"] = pair_err.mean()
    out["warp_err_std"] = pair_err.std(unbiased=False)
    out["warp_err_max"] = pair_err.max()
    diff = (frames[1:] - frames[:-1]).abs().mean()
    out["frame_diff_mean"] = diff
    out["warp_ratio"] = out["warp_err_mean"] / diff if diff > _EPS else zero
    luma = (0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]).mean(dim=(1, 2))
    out["flicker"] = (luma[1:] - luma[:-1]).abs().mean()
    out["out_of_view_share"] = 1 - valid.mean()

    return np.array([float(out[k]) for k in MOTION_FEATURES], dtype=np.float32)


def working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``size`` and both sides multiples of 8 (aspect kept)."""
    short, long = min(height, width), max(height, width)
    s = max(8, int(round(size / 8)) * 8)
    l = max(8, int(round(size * long / short / 8)) * 8)
    return (s, l) if height <= width else (l, s)


class RAFTMotion(Extractor):
    name = "raft_motion"
    uses_prompt = False  # pixels only
    kind = "video"
    version = "1"
    defaults = {
        "model": "raft_large",  # raft_large | raft_small
        "weights": "default",  # torchvision's release (cache / download), or a local .pth state dict
        "n_frames": 16,  # frames sampled uniformly over the clip -> n_frames-1 flows
        "sampling": "uniform",
        "size": 256,  # shorter side of the working resolution (multiple of 8, >= 128)
        "num_flow_updates": 12,  # RAFT's iterative refinements (torchvision default)
        "static_threshold": 0.5,  # px: below this a pixel counts as static
        "pair_batch": 8,  # frame pairs per RAFT forward (memory only; results unchanged)
    }
    packages = ("numpy", "torch", "torchvision", "av")
    needs = "torchvision RAFT weights (torch hub cache or a local .pth)"
    local_options = {"weights": "path"}
    path_keywords = ("default", "torchvision")
    summary = "optical-flow motion statistics (magnitude, acceleration, warp error, camera vs local)"

    def output_dim(self) -> int:
        return len(MOTION_FEATURES)

    def feature_names(self, dim: int) -> list[str]:
        return [f"{self.name}_{k}" for k in MOTION_FEATURES]

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["frames"] = frames_identity(self.options["n_frames"], self.options["sampling"])
        # pair_batch changes memory use, not numbers: keep it out of the key.
        ident["options"] = {k: v for k, v in ident["options"].items() if k != "pair_batch"}
        return ident

    # ------------------------------------------------------------------ weights
    def _build(self):
        import torch
        from torchvision.models import optical_flow as of

        arch = self.options["model"]
        if arch not in ("raft_large", "raft_small"):
            raise ValueError(f"raft_motion: model must be 'raft_large' or 'raft_small', got {arch!r}")
        builder = getattr(of, arch)
        model = builder(weights=None)
        src = str(self.options["weights"])
        if src.lower() in ("default", "torchvision"):
            enum = (of.Raft_Large_Weights if arch == "raft_large" else of.Raft_Small_Weights).DEFAULT
            cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
            if os.path.exists(cached):
                state = torch.load(cached, map_location="cpu", weights_only=True)
            elif hub_offline() or os.environ.get("TORCH_HUB_OFFLINE"):
                raise WeightsNotFoundError(self._missing(enum.url, cached, "offline mode is set, nothing downloaded"))
            else:
                try:
                    state = enum.get_state_dict(progress=False)
                except Exception as err:
                    raise WeightsNotFoundError(self._missing(enum.url, cached, f"{type(err).__name__}: {err}")) from err
        else:
            path = os.path.expanduser(src)
            if not os.path.isfile(path):
                raise WeightsNotFoundError(f"raft_motion: weights file not found: {path} (option weights= expects a "
                                           f"local .pth state dict of torchvision's {arch}, or 'default')")
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsNotFoundError(f"raft_motion: weights {src!r} do not fit torchvision's {arch}: {err}") from err
        return model.eval()

    def _missing(self, url: str, cached: str, why: str) -> str:
        return (f"raft_motion: torchvision {self.options['model']} weights not found in the torch hub cache "
                f"({cached}); {why}. Download {url} on a machine with access and put it at that path "
                "(or set TORCH_HOME), or pass weights=/path/to/state_dict.pth.")

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        if int(self.options["size"]) < 128:  # RAFT's 4-level correlation pyramid on 1/8-scale features
            raise ValueError(f"raft_motion: size must be at least 128 (RAFT needs >= 16 feature cells per side), "
                             f"got {self.options['size']}")
        self.model = self._build().to(device)

    # ------------------------------------------------------------------ runner
    def prepare(self, item: Item):
        """uint8 [T, 3, h, w] at the working resolution (worker side)."""
        import torch
        from torchvision.transforms.v2 import functional as tvF

        frames = read_video_frames(item.path, self.options["n_frames"], self.options["sampling"],
                                   allow_still=self.allow_media_mismatch)
        if len(frames) < 2:
            raise ItemError(f"{item.item_id}: video has {len(frames)} frame(s); motion needs at least 2 ({item.path})")
        x = torch.from_numpy(stack_frames(frames)).permute(0, 3, 1, 2).contiguous()
        h, w = working_size(x.shape[-2], x.shape[-1], int(self.options["size"]))
        return tvF.resize(x, [h, w], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)

    def collate(self, prepared: list[Any]) -> list[Any]:
        return list(prepared)  # working sizes differ between aspect ratios

    def flows(self, frames_u8):
        """RAFT flow for each consecutive pair: float32 [T-1, 2, h, w] on the device."""
        import torch

        x = frames_u8.to(self.device, non_blocking=True).float() / 127.5 - 1.0  # RAFT expects [-1, 1]
        out = []
        pb = max(1, int(self.options["pair_batch"]))
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for i in range(0, x.shape[0] - 1, pb):
                j = min(i + pb, x.shape[0] - 1)
                preds = self.model(x[i:j], x[i + 1: j + 1], num_flow_updates=int(self.options["num_flow_updates"]))
                out.append(preds[-1].float())
        return torch.cat(out)

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        import torch

        rows = []
        for frames_u8 in batch:
            flow = self.flows(frames_u8)
            with torch.inference_mode():
                frames = frames_u8.to(self.device).float() / 255.0
                rows.append(motion_statistics(flow, frames, float(self.options["static_threshold"])))
        return np.stack(rows).astype(np.float32)
