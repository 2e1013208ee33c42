"""Decoding media into RGB arrays, with per-item errors that say what is wrong.

Images: PIL, converted as a viewer would show them (EXIF orientation applied,
palette/grey/CMYK/16-bit -> 8-bit RGB, ICC profile of CMYK and wide-gamut images
applied, transparency composited on white). Videos: PyAV (mp4, webm, GIF, ...),
frames sampled uniformly or all.

Every failure that concerns one file raises :class:`ItemError` whose message names
the file and the reason; the runner stores it and goes on with the next item.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from .base import ItemError

# Refuse absurd images before decoding them. Checked explicitly from the header (no
# pixels decoded yet); PIL's own guard stays on as a second line at twice this size.
MAX_IMAGE_PIXELS = 16384 * 16384
# Frames of a video are capped the same way (a 30-minute 4K file is not a T2V clip).
MAX_VIDEO_FRAMES = 100_000

_WHITE = 255


def _check_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise ItemError(f"file not found: {path}")
    if os.path.isdir(path):
        raise ItemError(f"{what} path is a directory, not a file: {path}")
    if os.path.getsize(path) == 0:
        raise ItemError(f"empty file (0 bytes): {path}")


MISMATCH_HINT = "--allow-media-mismatch (make: ARGS=--allow-media-mismatch)"


def load_image(path: str | os.PathLike, allow_animated: bool = False) -> "PIL.Image.Image":  # noqa: F821
    """Open an image file as 8-bit RGB; raise ItemError with the reason when it can't.

    The format is sniffed from the content, so a PNG named ``.jpg`` decodes fine.
    Truncated files are errors (PIL's ``LOAD_TRUNCATED_IMAGES`` would silently fill
    the rest with grey, which would poison quality features). An animated file (GIF,
    WebP, APNG: a video) or a video container is refused: reading it as an image would
    silently keep frame 0. ``allow_animated=True`` keeps frame 0 (the first frame of a
    video container), on request.
    """
    from PIL import Image, ImageFile

    path = os.fspath(path)
    _check_file(path, "image")
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # PIL warns between 1x and 2x its limit; we decide ourselves just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ItemError(
                    f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit of "
                    f"{MAX_IMAGE_PIXELS:,} (decompression bomb guard): {path}"
                )
            if w == 0 or h == 0:
                raise ItemError(f"image has zero size ({w}x{h}): {path}")
            if not allow_animated and getattr(im, "is_animated", False):
                raise ItemError(f"{path} is animated (a video with {_frames_text(im)} frames): the image track reads "
                                f"still images and would keep frame 0 only; use TRACK=video, or {MISMATCH_HINT}")
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library may have switched it on globally
                _load_strict(im)
            else:
                im.load()
            im = _exif_upright(im)
            return to_rgb(im)
    except ItemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ItemError(f"image too large (decompression bomb guard): {path}: {err}") from err
    except Image.UnidentifiedImageError as err:
        if _is_video_container(path):
            if allow_animated:
                return _first_video_frame(path)
            raise ItemError(f"{path} is a video: the image track reads images; use TRACK=video, "
                            f"or {MISMATCH_HINT} to take its first frame") from None
        raise ItemError(f"not an image file (format not recognised): {path}") from err
    except Exception as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason.lower():
            reason = f"truncated file ({reason})"
        raise ItemError(f"cannot decode image {path}: {type(err).__name__}: {reason}") from err


def _frames_text(im) -> str:
    n = getattr(im, "n_frames", None) if im.format != "GIF" else None  # a GIF's count needs a full scan
    return str(n) if n else "several"


def _is_video_container(path: str) -> bool:
    try:
        import av

        with av.open(path) as c:
            return bool(c.streams.video) and c.format.name not in IMAGE_DEMUXERS | TEXT_DEMUXERS
    except Exception:  # noqa: BLE001 - not openable by PyAV: not a video
        return False


def _first_video_frame(path: str):
    from PIL import Image

    try:
        import av

        with av.open(path) as c:
            for frame in c.decode(c.streams.video[0]):
                return Image.fromarray(_frame_rgb(frame))
        raise ItemError(f"video has zero decodable frames: {path}")
    except ItemError:
        raise
    except Exception as err:
        raise ItemError(f"cannot decode the first frame of video {path}: {type(err).__name__}: {err}") from err


#: PyAV/FFmpeg demuxers that read still images (a PNG opened by PyAV is a "1-frame video")
IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "ppm_pipe", "pgm_pipe",
                  "pam_pipe", "qoi_pipe", "dpx_pipe", "exr_pipe", "j2k_pipe", "jpegls_pipe", "pcx_pipe",
                  "sgi_pipe", "sunrast_pipe", "svg_pipe", "xbm_pipe", "xpm_pipe", "psd_pipe", "tiff", "bmp"}
#: FFmpeg demuxers that render text as "video" (ANSI/text-mode art): 'tty' takes any .txt/.nfo/.asc of a few hundred
#: bytes, so a list of paths was a video (refused by image models, scored as one clip by video models)
TEXT_DEMUXERS = {"tty", "bin", "xbin", "adf", "idf"}


def media_kind(path: str) -> str:
    """'image' or 'video' from the file's content (not its name); ItemError with the reason otherwise.

    An animated GIF/WebP/APNG is a video; a one-frame GIF is an image. Reads headers only.
    """
    path = os.fspath(path)
    _check_file(path, "media")
    from PIL import Image, UnidentifiedImageError

    try:
        return "video" if _animated(path) else "image"
    except UnidentifiedImageError:
        pass
    except Image.DecompressionBombError:
        return "image"
    except Exception as err:  # PIL knows the format but cannot read the header: a broken image
        raise ItemError(f"broken image file ({type(err).__name__}: {err}): {path}") from None
    if _is_video_container(path):
        return "video"
    raise ItemError(f"not an image or video file (format not recognised): {path}")


def still_image(path: str) -> bool:
    """True when the file's content is a single-frame image (PIL reads it, not animated)."""
    try:
        return not _animated(path)
    except Exception:  # noqa: BLE001 - anything PIL cannot open is not a still image
        return False


def _animated(path: str) -> bool:
    """Whether PIL opens ``path`` as an animated image (GIF, WebP, APNG: a video). Reads the header
    only; PIL's errors pass through (UnidentifiedImageError: not an image PIL knows)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked when decoding
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))


def rgb_array(im, rows: int = 1024) -> np.ndarray:
    """HxWx3 uint8 array of an RGB PIL image, copied in stripes of ``rows`` rows.

    ``np.asarray(im)`` goes through ``im.tobytes()``: two full copies at once beside the
    image (2.2 GB for 16,000 x 16,000). Stripes keep it to one copy plus a stripe.
    """
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if w * h <= rows * rows:  # small: one call
        return np.asarray(im)
    out = np.empty((h, w, 3), np.uint8)
    for a in range(0, h, rows):
        out[a: a + rows] = np.asarray(im.crop((0, a, w, min(h, a + rows))))
    return out


def _load_strict(im) -> None:
    from PIL import ImageFile

    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _exif_upright(im):
    """Apply the EXIF orientation tag; a broken EXIF block leaves the image as stored."""
    from PIL import ImageOps

    try:
        if im.getexif().get(0x0112, 1) == 1:  # no rotation: exif_transpose would return a full copy
            return im
        return ImageOps.exif_transpose(im)
    except Exception:  # malformed EXIF must not cost the whole image
        return im


def _apply_icc(im):
    """Convert with the embedded ICC profile where a plain conversion is visibly wrong.

    CMYK (any profile) and RGB with a non-sRGB profile (Display P3, Adobe RGB) go to
    sRGB; everything else is left alone (sRGB is what the plain path assumes anyway).
    """
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("CMYK", "RGB"):
        return im
    try:
        import io

        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode == "RGB":
            desc = (ImageCms.getProfileDescription(src) or "").lower()
            if "srgb" in desc or "iec61966" in desc:
                return im
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # unreadable profile: fall back to the plain conversion
        return im


def to_rgb(im):
    """8-bit RGB as a viewer shows it (transparency over white)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit samples: the full range is 0..65535 whatever the content.
        arr = np.asarray(im, dtype=np.float32)
        im = Image.fromarray(np.clip(arr * (255.0 / 65535.0) + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "I":
        # 32-bit integer (usually a 16-bit PNG or TIFF opened as I): guess the range from the data.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        im = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode in ("CMYK", "RGB"):
        im = _apply_icc(im)
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")  # applies palette / tRNS transparency
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() == 255:
            return im.convert("RGB")
        background = Image.new("RGBA", im.size, (_WHITE, _WHITE, _WHITE, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


# --------------------------------------------------------------------------- video
def uniform_indices(total: int, n: int) -> np.ndarray:
    """n indices spread evenly over [0, total): the centres of n equal segments."""
    if total <= 0:
        return np.zeros(0, dtype=int)
    if n <= 0 or n >= total:
        return np.arange(total)
    return np.clip(((np.arange(n) + 0.5) * total / n).astype(int), 0, total - 1)


def _frame_rgb(frame) -> np.ndarray:
    """HxWx3 uint8 RGB; frames with alpha (GIF, VP9 alpha) are composited on white like images."""
    fmt = frame.format.name
    if "a" in fmt.replace("yuv", "").replace("gray", "") or fmt == "pal8":
        rgba = frame.to_ndarray(format="rgba")
        a = rgba[..., 3:4]
        if a.min() < 255:
            a = a.astype(np.float32) / 255.0
            rgb = rgba[..., :3].astype(np.float32) * a + _WHITE * (1.0 - a)
            out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        else:
            out = np.ascontiguousarray(rgba[..., :3])
    else:
        out = frame.to_ndarray(format="rgb24")
    rot = int(getattr(frame, "rotation", 0) or 0) % 360
    if rot in (90, 180, 270):  # display matrix of phone videos: show upright, as players do
        out = np.ascontiguousarray(np.rot90(out, k=rot // 90))
    return out


def _header_frames(stream) -> int:
    """Frame count the container announces (0 when it does not know)."""
    return int(stream.frames or 0)


def _count_packets(path: str) -> int:
    """Frames of the first video stream counted from packets: demuxing only, no decoding."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def _gif_truncated(path: str) -> bool:
    """A GIF ends with the trailer byte ';' (0x3B); a cut file decodes its first frames
    silently, so this is the only sign of truncation."""
    with open(path, "rb") as f:
        if f.read(4) != b"GIF8":
            return False
        f.seek(max(0, os.path.getsize(path) - 64))
        return not f.read().rstrip(b"\x00").endswith(b";")


# Fewer decodable frames than this share of the header's count means a cut or corrupt file.
MIN_DECODED_SHARE = 0.9


def _decode(path: str, n_frames: int, sampling: str, count: int | None = None):
    """One sequential decoding pass that converts and keeps only the sampled frames.

    The frames to keep come from ``count`` if given, else the header's frame count, else
    a packet count (second, demux-only open). Returns (frames by index, frames decoded,
    header count, sampled indices or None for "all"). Stops after the last sampled frame.
    """
    import av

    kept: dict[int, np.ndarray] = {}
    n = 0
    with av.open(path) as container:
        if not container.streams.video:
            raise ItemError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        header = _header_frames(stream)
        wanted, stop, idx = None, None, None
        if sampling == "uniform":
            if count is None:
                count = header if header > 0 else _count_packets(path)
            idx = uniform_indices(count, n_frames)
            wanted = set(idx.tolist())
            stop = int(idx[-1]) if len(idx) else None  # no count at all: decode to the end
        for frame in container.decode(stream):
            if wanted is None or n in wanted:
                kept[n] = _frame_rgb(frame)
            n += 1
            if stop is not None and n > stop:
                break
            if n > MAX_VIDEO_FRAMES:
                raise ItemError(f"video has more than {MAX_VIDEO_FRAMES} frames: {path}")
    return kept, n, header, idx


def read_video_frames(path: str | os.PathLike, n_frames: int = 8, sampling: str = "uniform",
                      allow_still: bool = False) -> list[np.ndarray]:
    """Decode a video and return frames as HxWx3 uint8 RGB arrays.

    sampling="uniform": n_frames spread over the clip (all of them if it is shorter);
    sampling="all": every frame (n_frames ignored).

    Decodes sequentially (accurate, and cheap for the short clips of T2V datasets)
    instead of seeking, but converts and keeps only the frames it returns, and stops
    after the last one (so damage after the last sampled frame goes unnoticed). The
    frame count comes from the header or a packet count. Per-item errors: no video
    stream, undecodable data, zero frames, a GIF without its trailer, or fewer than
    90 % of the header's frames decodable (truncated). A smaller shortfall (edit lists,
    a wrong count) re-samples over what really decodes, so sampling stays uniform.

    A still image (PNG, JPEG, a one-frame GIF) is refused: it would become a 1-frame video
    whose motion statistics are all zero. ``allow_still=True`` reads it as that, on request.
    """
    path = os.fspath(path)
    _check_file(path, "video")
    if sampling not in ("uniform", "all"):
        raise ValueError(f"sampling must be 'uniform' or 'all', got {sampling!r}")
    try:
        if _gif_truncated(path):
            raise ItemError(f"truncated GIF (no trailer byte at the end): {path}")
        if not allow_still and still_image(path):
            raise ItemError(f"{path} is a still image: the video track reads videos (it would become a 1-frame "
                            f"video); use TRACK=image, or {MISMATCH_HINT}")
        kept, total, header, idx = _decode(path, n_frames, sampling)
        if idx is None:  # sampling="all"
            idx = np.arange(total)
        reached_end = sampling == "all" or len(idx) == 0 or int(idx[-1]) >= total
        if reached_end and header > 0 and total < MIN_DECODED_SHARE * header:
            raise ItemError(
                f"truncated or corrupt video: the header announces {header} frames, "
                f"only {total} decode: {path}"
            )
        if sampling == "uniform" and reached_end and total > 0:
            # Fewer frames than counted (or no count: the pass above decoded everything):
            # sample again over what really decodes.
            idx = uniform_indices(total, n_frames)
            if not set(idx.tolist()) <= set(kept):
                kept, total, _, idx = _decode(path, n_frames, sampling, count=total)
    except ItemError:
        raise
    except Exception as err:
        reason = str(err) or type(err).__name__
        raise ItemError(f"cannot decode video {path}: {type(err).__name__}: {reason}") from err
    if total == 0 or not kept:
        raise ItemError(f"video has zero decodable frames: {path}")
    return [kept[i] for i in idx.tolist() if i in kept]


def frames_identity(n_frames: int, sampling: str) -> dict:
    return {"n_frames": int(n_frames), "sampling": sampling, "decoder": "pyav"}


def stack_frames(frames: Sequence[np.ndarray]) -> np.ndarray:
    """[T, H, W, 3] uint8; frames of different size (rare, broken files) are an error."""
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ItemError(f"frames change size within the video: {sorted(shapes)}")
    return np.stack(frames)
