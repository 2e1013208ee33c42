"""Hand-crafted quality statistics (no weights): BRISQUE's NSS features + simple measures.

The vector (49 values, names from :data:`FEATURE_NAMES`):

* ``brisque_s{1,2}_*`` (36): BRISQUE (Mittal, Moorthy & Bovik, IEEE TIP 2012) at full
  and half scale. Grey image in [0, 1] (Rec. 709 luma, as ``skimage.color.rgb2gray``),
  MSCN coefficients ``(I - mu) / (sigma + 1/255)`` with a 7x7 Gaussian window
  (sigma 7/6, zero padding as MATLAB's ``filter2(..., 'same')``); half scale by
  bicubic ``cv2.resize`` (as the ``brisque`` package does). Per scale:
  ``mscn_alpha, mscn_var`` — GGD shape and variance of the MSCN coefficients; then for
  each neighbour product ``h`` (horizontal), ``v`` (vertical), ``d1`` (main diagonal),
  ``d2`` (secondary diagonal): ``alpha, eta, var_left, var_right`` — AGGD shape, mean,
  left and right variances.
* ``sharpness_log_lapvar``: log10(1 + variance of the 3x3 Laplacian of grey 0..255).
* ``colourfulness``: Hasler & Süsstrunk (2003) M = sigma_rgyb + 0.3 mu_rgyb, RGB 0..255.
* ``rms_contrast``: standard deviation of grey in [0, 1].
* ``mean_luminance``: mean grey in [0, 1].
* ``entropy_bits``: Shannon entropy of the 256-bin grey histogram (0..8 bits).
* ``noise_sigma``: Immerkaer (1996) fast noise standard deviation, grey 0..255.
* ``blockiness``: JPEG 8x8 grid strength: mean |neighbour difference| across 8-pixel
  block borders / the same inside blocks (about 1 without blocking, > 1 with it).
  Measured on the full-resolution grey image (a downscale would move the grid).
* ``clip_black``, ``clip_white``: share of pixels with grey <= 5/255 or >= 250/255.
* ``saturation_mean``: mean HSV saturation in [0, 1].
* ``width``, ``height``: the original size in pixels (before ``max_side``), ``aspect`` =
  width / height.

Everything but blockiness and the size is computed after shrinking the image so its
longest side is at most ``max_side`` (area interpolation; ``None`` or 0 keeps the
full resolution, refused per item above :data:`FULL_RES_MAX_PIXELS`). Memory per item is
bounded: blockiness of a large image is computed in stripes of rows, so beside the decoded
image (3 bytes a pixel, plus its copy as an array) nothing full-size is allocated (a
16,000 x 16,000 image: peak 6.1 GB before, see benchmarks/bench_nss_memory.py). The vector is computed in :meth:`NSS.transform`, i.e. in the
DataLoader workers in parallel; ``embed``/``compute`` only stack.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .base import ItemError
from .image_base import ImageExtractor

_LUMA = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray (Rec. 709)
_C = 1.0 / 255.0  # MSCN stabilising constant for an image in [0, 1]
_PAIRS = ("h", "v", "d1", "d2")
MIN_SIDE = 16  # below this the half-scale statistics have almost no samples
#: with max_side=0/None (full resolution) larger images are refused per item: every statistic
#: then runs on full-size float64 arrays (~55 bytes a pixel measured, ~3.7 GB at this size)
FULL_RES_MAX_PIXELS = 8192 * 8192


def _brisque_names() -> list[str]:
    names = []
    for s in (1, 2):
        names += [f"brisque_s{s}_mscn_alpha", f"brisque_s{s}_mscn_var"]
        for p in _PAIRS:
            names += [f"brisque_s{s}_{p}_{q}" for q in ("alpha", "eta", "var_left", "var_right")]
    return names


OTHER_NAMES = [
    "sharpness_log_lapvar", "colourfulness", "rms_contrast", "mean_luminance", "entropy_bits",
    "noise_sigma", "blockiness", "clip_black", "clip_white", "saturation_mean",
    "width", "height", "aspect",
]
FEATURE_NAMES = _brisque_names() + OTHER_NAMES


# ------------------------------------------------------------------ BRISQUE part
@lru_cache(maxsize=1)
def _alpha_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape grid and the two moment ratios that identify the shape.

    rho(a) = E[x^2] / E|x|^2 = G(1/a) G(3/a) / G(2/a)^2 (GGD, decreasing in a) and
    phi(a) = 1 / rho(a) (AGGD's ratio, increasing). Inverting by interpolation on a
    fine grid replaces the per-fit root search (the slow part of the reference code).
    """
    from scipy.special import gammaln

    a = np.geomspace(0.05, 30.0, 40001)
    phi = np.exp(2 * gammaln(2 / a) - gammaln(1 / a) - gammaln(3 / a))
    return a, phi, gammaln(2 / a) - gammaln(1 / a)


def _alpha_from_phi(value: float) -> float:
    a, phi, _ = _alpha_table()
    return float(np.interp(value, phi, a))  # phi increases with a; clipped to [0.05, 30]


def _gamma_ratio(alpha: float) -> tuple[float, float]:
    from scipy.special import gammaln

    # sqrt(G(1/a)/G(3/a)) and G(2/a)/G(1/a)
    return (float(np.exp(0.5 * (gammaln(1 / alpha) - gammaln(3 / alpha)))),
            float(np.exp(gammaln(2 / alpha) - gammaln(1 / alpha))))


def _moments(x: np.ndarray) -> tuple[float, float, float, int, int]:
    """sum x^2, sum |x|, sum x^2 over x<0, count x<0, count.

    Works on float32 or float64 input and always sums in float64 (numpy's pairwise
    summation): float32 halves the memory traffic, which is what these passes cost.
    (No np.dot: OpenBLAS's threaded dot is ~50x slower on a busy machine.)
    """
    x = x.ravel() if x.flags.c_contiguous else np.ascontiguousarray(x).ravel()
    xn = np.minimum(x, 0)  # the left half (zeros elsewhere)
    sum_sq = float(np.square(x).sum(dtype=np.float64))
    sum_sq_neg = float(np.square(xn).sum(dtype=np.float64))
    sum_abs = float(x.sum(dtype=np.float64)) - 2.0 * float(xn.sum(dtype=np.float64))
    return sum_sq, sum_abs, sum_sq_neg, int(np.count_nonzero(xn)), x.size


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Symmetric generalised Gaussian: (shape alpha, variance), by moment matching."""
    sum_sq, sum_abs, _, _, n = _moments(x)
    if sum_sq <= 0 or n == 0:
        return _alpha_table()[0][0], 0.0
    return _alpha_from_phi((sum_abs / n) ** 2 / (sum_sq / n)), sum_sq / n


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric GGD (Lasmar et al. 2009): (alpha, mean eta, left var, right var).

    Right side is x >= 0, as in the ``brisque`` package (MATLAB uses x > 0; the two
    differ only where exact zeros are many, e.g. flat synthetic areas).
    """
    sum_sq, sum_abs, sum_sq_neg, n_neg, n = _moments(x)
    n_pos = n - n_neg
    if sum_sq <= 0 or n == 0:
        return _alpha_table()[0][0], 0.0, 0.0, 0.0
    var_l = sum_sq_neg / n_neg if n_neg else 0.0
    var_r = (sum_sq - sum_sq_neg) / n_pos if n_pos else 0.0
    r_hat = (sum_abs / n) ** 2 / (sum_sq / n)
    if var_r > 0:
        g = np.sqrt(var_l / var_r)
        r_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    else:  # all mass on the left: the limit gamma -> infinity of the same correction
        r_norm = r_hat
    alpha = _alpha_from_phi(r_norm)
    beta_const, g21 = _gamma_ratio(alpha)
    eta = (np.sqrt(var_r) - np.sqrt(var_l)) * beta_const * g21
    return alpha, float(eta), var_l, var_r


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    x = np.arange(7) - 3
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    return g / g.sum()  # the normalised 7x7 Gaussian is the outer product of this


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float64 image in [0, 1]."""
    import cv2

    w = _window()
    blur = lambda im: cv2.sepFilter2D(im, cv2.CV_64F, w, w, borderType=cv2.BORDER_CONSTANT)  # noqa: E731
    mu = blur(gray)
    var = blur(gray * gray)
    var -= mu * mu
    np.abs(var, out=var)
    np.sqrt(var, out=var)
    var += _C
    out = gray - mu
    out /= var
    # Flat areas give |MSCN| ~ 1e-17 whose sign is rounding noise of the filter
    # implementation; snapping them to 0 keeps the left/right split (AGGD) reproducible.
    out[np.abs(out) < 1e-9] = 0.0
    return out


def brisque_scale(gray: np.ndarray) -> list[float]:
    """18 BRISQUE features of one scale."""
    m64 = mscn(gray)
    alpha, var = ggd_fit(m64)
    feats = [alpha, var]
    # Products in float32: |MSCN| is O(1) and small values were snapped to 0 in float64,
    # so the signs (left/right split) are the float64 ones; sums stay float64.
    m = m64.astype(np.float32)
    products = (
        m[:, :-1] * m[:, 1:],  # horizontal
        m[:-1, :] * m[1:, :],  # vertical
        m[:-1, :-1] * m[1:, 1:],  # main diagonal
        m[1:, :-1] * m[:-1, 1:],  # secondary diagonal
    )
    for p in products:
        feats += list(aggd_fit(p))
    return feats


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """36 BRISQUE features (full + half scale) of a float64 grey image in [0, 1]."""
    import cv2

    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.array(brisque_scale(gray) + brisque_scale(half), dtype=np.float64)


# ------------------------------------------------------------------ other measures
def blockiness(gray: np.ndarray, block: int = 8) -> float:
    """Mean |difference| across block borders / inside blocks, averaged over both axes."""
    ratios = []
    for axis in (1, 0):
        if gray.shape[axis] < 2 * block:
            continue
        d = np.abs(np.diff(gray, axis=axis)).mean(axis=1 - axis, dtype=np.float64)  # per gap
        border = np.zeros(d.size, bool)
        border[block - 1 :: block] = True  # gap between pixel 8k+7 and 8k+8
        inside = d[~border].mean()
        ratios.append(d[border].mean() / inside if inside > 1e-9 else 1.0)
    return float(np.mean(ratios)) if ratios else 1.0


def blockiness_rgb(rgb: np.ndarray, block: int = 8, rows: int = 512) -> float:
    """:func:`blockiness` of ``luma32(rgb)`` computed in stripes of ``rows`` rows.

    The same numbers (up to float64 summation order) without the full-resolution float32
    copies: the plain path holds ``rgb.astype(float32)`` (12 bytes/pixel), the grey image and
    its differences (4 bytes/pixel each), over 6 GB for a 16,000 x 16,000 image. Here the
    temporaries are those of one stripe.
    """
    h, w = rgb.shape[:2]
    col_gaps = np.zeros(max(w - 1, 0), np.float64)  # sum over rows of |I[:, j+1] - I[:, j]|
    row_gaps = np.zeros(max(h - 1, 0), np.float64)  # sum over columns of |I[i+1, :] - I[i, :]|
    prev_last = None  # the last grey row of the previous stripe (the gap across the stripe border)
    for a in range(0, h, rows):
        g = luma32(rgb[a: a + rows])
        if w >= 2:
            col_gaps += np.abs(np.diff(g, axis=1)).sum(axis=0, dtype=np.float64)
        if prev_last is not None:
            row_gaps[a - 1] = np.abs(g[0] - prev_last).sum(dtype=np.float64)
        if g.shape[0] > 1:
            row_gaps[a: a + g.shape[0] - 1] = np.abs(np.diff(g, axis=0)).sum(axis=1, dtype=np.float64)
        prev_last = g[-1].copy()
    ratios = []
    for d, n_other, size in ((col_gaps, h, w), (row_gaps, w, h)):  # axis 1 first, as blockiness()
        if size < 2 * block:
            continue
        d = d / n_other
        border = np.zeros(d.size, bool)
        border[block - 1:: block] = True
        inside = d[~border].mean()
        ratios.append(d[border].mean() / inside if inside > 1e-9 else 1.0)
    return float(np.mean(ratios)) if ratios else 1.0


def immerkaer_sigma(gray255: np.ndarray) -> float:
    """Immerkaer (1996): sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N| (grey 0..255)."""
    import cv2

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    r = cv2.filter2D(np.asarray(gray255, np.float32), cv2.CV_32F, kernel)[1:-1, 1:-1]
    h, w = gray255.shape
    return float(np.sqrt(np.pi / 2) * np.abs(r).sum(dtype=np.float64) / (6.0 * (w - 2) * (h - 2)))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk: sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2), 0..255 RGB."""
    import cv2

    f = rgb.astype(np.float32)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    (m_rg,), (s_rg,) = (v.ravel() for v in cv2.meanStdDev(rg))
    (m_yb,), (s_yb,) = (v.ravel() for v in cv2.meanStdDev(yb))
    return float(np.hypot(s_rg, s_yb) + 0.3 * np.hypot(m_rg, m_yb))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Grey 0..255 (float64) with the Rec. 709 weights; avoids a BLAS matmul (see _moments)."""
    out = rgb[..., 0] * _LUMA[0]
    out += rgb[..., 1] * _LUMA[1]
    out += rgb[..., 2] * _LUMA[2]
    return out


def luma32(rgb: np.ndarray) -> np.ndarray:
    """The same grey in float32 (for the measures that need no float64: 4x less traffic)."""
    import cv2

    return cv2.transform(rgb.astype(np.float32), _LUMA[None].astype(np.float32))


def nss_vector(rgb: np.ndarray, max_side: int | None = 1024) -> np.ndarray:
    """All 49 features of an HxWx3 uint8 RGB array (float64).

    BRISQUE runs in float64 (agreement with the reference); the other measures in float32
    (summed in float64), which on a busy 2-core machine is 10-20x faster for them.
    """
    import cv2

    h0, w0 = rgb.shape[:2]
    if min(h0, w0) < MIN_SIDE:
        raise ItemError(f"image too small for NSS features: {w0}x{h0} (needs >= {MIN_SIDE} px a side)")
    full_res = not max_side or max(h0, w0) <= max_side
    if full_res and h0 * w0 > FULL_RES_MAX_PIXELS:
        raise ItemError(f"image {w0}x{h0} is above {FULL_RES_MAX_PIXELS:,} pixels: too large for nss at full "
                        f"resolution (max_side={max_side!r} needs ~55 bytes a pixel); use max_side=1024 (the default)")
    rgb = np.ascontiguousarray(rgb)
    if not full_res:
        # Large image: blockiness in stripes at full resolution, the rest on the downscaled copy;
        # no full-size float array is ever made (memory ~ the decoded image, see blockiness_rgb).
        block = blockiness_rgb(rgb)
        s = max_side / max(h0, w0)
        size = (max(MIN_SIDE, round(w0 * s)), max(MIN_SIDE, round(h0 * s)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        g32 = luma32(rgb)
    else:
        g32 = luma32(rgb)  # float32 0..255, full resolution
        block = blockiness(g32)
    brisque = brisque_features(luma(rgb) / 255.0)

    n = g32.size
    lap = cv2.Laplacian(g32, cv2.CV_32F, ksize=1)
    (_,), (lap_sd,) = (v.ravel() for v in cv2.meanStdDev(lap))
    (g_mean,), (g_sd,) = (v.ravel() for v in cv2.meanStdDev(g32))
    hist = cv2.calcHist([(g32 + 0.5).astype(np.uint8)], [0], None, [256], [0, 256]).ravel()
    p = hist[hist > 0] / n
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    other = [
        np.log10(1.0 + lap_sd**2),
        colourfulness(rgb),
        g_sd / 255.0,
        g_mean / 255.0,
        float(-(p * np.log2(p)).sum()),
        immerkaer_sigma(g32),
        block,
        float(np.count_nonzero(g32 <= 5.0)) / n,
        float(np.count_nonzero(g32 >= 250.0)) / n,
        float(cv2.mean(sat)[0]) / 255.0,
        float(w0),
        float(h0),
        w0 / h0,
    ]
    return np.concatenate([brisque, np.array(other, dtype=np.float64)])


class NSS(ImageExtractor):
    """BRISQUE NSS statistics + sharpness, colour, contrast, noise, blocking, clipping, size."""

    name = "nss"
    uses_prompt = False  # pixels only
    version = "1"
    defaults = {"max_side": 1024}
    packages = ("numpy", "scipy", "opencv-python-headless", "pillow")
    summary = "49 hand-crafted quality statistics (BRISQUE NSS at 2 scales, sharpness, colour, noise, ...)"

    def output_dim(self) -> int:
        return len(FEATURE_NAMES)

    def feature_names(self, dim: int) -> list[str]:
        return [f"nss_{n}" for n in FEATURE_NAMES]

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        # Computed in float64 on the CPU whatever the run asks for: the precision of the
        # run must not split the store key of identical numbers.
        super().setup(device, "fp32")

    def prepare(self, item):
        # The decoded image is dropped as soon as its array exists: with the stripes of
        # blockiness_rgb and rgb_array, peak memory is about two copies of the 8-bit image.
        from .media import load_image, rgb_array

        im = load_image(item.path, allow_animated=self.allow_media_mismatch)
        rgb = rgb_array(im)
        del im
        return self.transform(rgb)

    def transform(self, image):
        """PIL RGB image (or HxWx3 uint8 array) -> the feature vector as a float32 tensor [D]."""
        import torch

        from .media import rgb_array

        rgb = image if isinstance(image, np.ndarray) else rgb_array(image)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ItemError(f"nss expects 8-bit RGB, got array {rgb.shape} {rgb.dtype}")
        max_side = self.options["max_side"]
        return torch.from_numpy(nss_vector(rgb, int(max_side) if max_side else None).astype(np.float32))

    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        """The 'pixels' are already the vectors (computed in transform)."""
        return pixels.detach().float().cpu().numpy()

    def compute(self, batch, items) -> np.ndarray:
        return np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)
