"""Small synthetic test videos written with PyAV (mp4 = H.264 / yuv420p, GIF = palette).

The frames are built first (so tests can compare with what they asked for), then
encoded. Content is a smooth random texture: textured enough for optical flow and
image embeddings, smooth enough to survive H.264 at small sizes.

- ``static_frames``: one frame repeated (no motion at all),
- ``moving_frames``: the texture translated by a known whole-pixel step per frame,
- ``shuffle_frames``: any clip with its frames in a random order (temporal glitches).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def texture(height: int, width: int, seed: int = 0, smooth: int = 6) -> np.ndarray:
    """Smooth random RGB texture, uint8 [H, W, 3] (box-blurred noise, stretched to 0..255)."""
    rng = np.random.default_rng(seed)
    pad = 4 * smooth
    x = rng.random((height + 2 * pad, width + 2 * pad, 3))
    k = 2 * smooth + 1
    for axis in (0, 1):  # separable box blur, repeated twice ~ Gaussian
        for _ in range(2):
            c = np.cumsum(np.concatenate([np.zeros_like(x.take([0], axis)), x], axis), axis)
            x = (c.take(range(k, c.shape[axis]), axis) - c.take(range(0, c.shape[axis] - k), axis)) / k
    x = x[: height, : width]
    x = (x - x.min()) / (x.max() - x.min() + 1e-12)
    return (x * 255).round().astype(np.uint8)


def static_frames(n: int = 16, size: tuple[int, int] = (64, 64), seed: int = 0) -> list[np.ndarray]:
    frame = texture(*size, seed=seed)
    return [frame.copy() for _ in range(n)]


def moving_frames(n: int = 16, size: tuple[int, int] = (64, 64), step: tuple[int, int] = (2, 1),
                  seed: int = 0) -> list[np.ndarray]:
    """Frame t is the texture rolled by t*step = (dx, dy) pixels: flow (dx, dy) between neighbours."""
    h, w = size
    dx, dy = step
    big = texture(h, w, seed=seed)
    return [np.roll(big, shift=(t * dy, t * dx), axis=(0, 1)) for t in range(n)]


def shuffle_frames(frames: Sequence[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Same frames, random order that moves every frame (a derangement when possible)."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    order = np.arange(n)
    for _ in range(100):
        order = rng.permutation(n)
        if n < 2 or not np.any(order == np.arange(n)):
            break
    return [frames[i] for i in order]


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: int = 8, crf: int = 0) -> Path:
    """H.264 mp4 (sizes rounded down to even, as yuv420p requires).

    crf=0 is lossless (after the yuv420p conversion), so a static clip decodes to
    identical frames; pass e.g. crf=23 for realistic compression noise."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": "ultrafast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h2, :w2]), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: int = 8) -> Path:
    """Animated GIF through PyAV's gif encoder (8-bit palette, like FETV's clips)."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="gif") as out:
        stream = out.add_stream("gif", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "rgb8"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="rgb8")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 8, **kw) -> Path:
    """mp4 or gif by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix == ".mp4":
        return write_mp4(path, frames, fps, **kw)
    raise ValueError(f"write_video: unsupported suffix {suffix!r} (use .mp4 or .gif)")
