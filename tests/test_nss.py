"""nss: BRISQUE part against the `brisque` package, and each simple measure on images built to move it.

Tolerance against brisque 0.2.0 on natural images (skimage samples) and noise:
the 32 AGGD features (pairwise products) within 1 % (relative, + 1e-3 absolute on
the means), the 4 MSCN features within 3 % (we fit a symmetric GGD as Mittal et al.;
the package fits an AGGD to the MSCN coefficients too, which shifts the shape
slightly). On images with large flat areas (heavy JPEG) the reference is itself
ill-defined (the sign of 1e-17 products decides left vs right), so there we check
our fitting math against the package's own fit on the same coefficients.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from extractors.base import Item, ItemError
from extractors.nss import FEATURE_NAMES, NSS, aggd_fit, brisque_features, luma, mscn, nss_vector

skdata = pytest.importorskip("skimage.data")

MSCN_IDX = [i for i, n in enumerate(FEATURE_NAMES[:36]) if "mscn" in n]
PAIR_IDX = [i for i in range(36) if i not in MSCN_IDX]


def _f(name: str, vec: np.ndarray) -> float:
    return float(vec[FEATURE_NAMES.index(name)])


@pytest.fixture(scope="module")
def reference():
    brisque = pytest.importorskip("brisque")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return brisque.BRISQUE(url=False)


def _ref_features(ref, rgb: np.ndarray) -> np.ndarray:
    """The package's own 36 features (same steps as BRISQUE.score, before the SVR)."""
    import cv2
    import skimage.color

    gray = skimage.color.rgb2gray(rgb)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = list(ref.calculate_brisque_features(gray, 7, 7 / 6)) + list(ref.calculate_brisque_features(half, 7, 7 / 6))
    return np.array([float(np.ravel(v)[0]) for v in feats])


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "noise"])
def test_brisque_part_agrees_with_brisque_package(reference, name):
    if name == "noise":
        rgb = np.random.default_rng(0).integers(0, 256, (160, 200, 3), dtype=np.uint8)
    else:
        rgb = getattr(skdata, name)()
    ref = _ref_features(reference, rgb)
    ours = brisque_features(luma(rgb) / 255.0)
    np.testing.assert_allclose(ours[PAIR_IDX], ref[PAIR_IDX], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(ours[MSCN_IDX], ref[MSCN_IDX], rtol=3e-2)


def test_aggd_fit_matches_package_fit_on_flat_heavy_image(reference):
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, format="JPEG", quality=10)
    gray = luma(np.asarray(Image.open(buf))) / 255.0
    m = mscn(gray)
    for prod in (m[:, :-1] * m[:, 1:], m[1:, :-1] * m[:-1, 1:]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = reference.asymmetric_generalized_gaussian_fit(prod)
        alpha, eta, sd_l, sd_r = (float(np.ravel(v)[0]) for v in fit)
        ref = [alpha, eta, sd_l**2, sd_r**2]  # the package returns standard deviations here
        np.testing.assert_allclose(aggd_fit(prod), ref, rtol=2e-3, atol=1e-6)


def test_vector_layout_and_names():
    ex = NSS()
    names = ex.feature_names(ex.output_dim())
    assert len(names) == ex.output_dim() == len(FEATURE_NAMES) == 49
    assert len(set(names)) == len(names)
    v = nss_vector(skdata.chelsea())
    assert v.shape == (49,) and np.isfinite(v).all()
    assert _f("width", v) == 451 and _f("height", v) == 300 and _f("aspect", v) == pytest.approx(451 / 300)


def _texture(seed=0, size=256):
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 1.5)


def test_sharpness_drops_with_blur():
    import cv2

    img = skdata.astronaut()
    blurred = cv2.GaussianBlur(img, (0, 0), 3)
    assert _f("sharpness_log_lapvar", nss_vector(blurred)) < _f("sharpness_log_lapvar", nss_vector(img)) - 0.5


def test_noise_estimate_tracks_added_noise():
    rng = np.random.default_rng(1)
    flat = np.full((256, 256, 3), 128.0)
    for sigma in (5.0, 15.0):
        noisy = np.clip(flat + rng.normal(0, sigma, flat.shape[:2])[..., None], 0, 255).round().astype(np.uint8)
        assert _f("noise_sigma", nss_vector(noisy)) == pytest.approx(sigma, rel=0.1)


def test_blockiness_sees_jpeg_blocks():
    img = skdata.astronaut()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=5)
    blocky = np.asarray(Image.open(buf).convert("RGB"))
    clean = _f("blockiness", nss_vector(img))
    assert 0.8 < clean < 1.2
    assert _f("blockiness", nss_vector(blocky)) > clean + 0.3


def test_colour_contrast_entropy_clipping():
    grey = np.repeat(_texture()[..., :1], 3, axis=2)
    v = nss_vector(grey)
    assert _f("colourfulness", v) == pytest.approx(0, abs=1e-6)
    assert _f("saturation_mean", v) == pytest.approx(0, abs=1e-6)
    colourful = nss_vector(skdata.astronaut())
    assert _f("colourfulness", colourful) > 30
    # entropy: constant image 0 bits; every grey level equally often 8 bits
    ramp = np.repeat(np.tile(np.arange(256, dtype=np.uint8), (64, 1))[..., None], 3, axis=2)
    assert _f("entropy_bits", nss_vector(ramp)) == pytest.approx(8.0, abs=1e-6)
    half = np.zeros((64, 64, 3), np.uint8)
    half[:, 32:] = 255
    v = nss_vector(half)
    assert _f("entropy_bits", v) == pytest.approx(1.0)
    assert _f("clip_black", v) == pytest.approx(0.5) and _f("clip_white", v) == pytest.approx(0.5)
    assert _f("rms_contrast", v) == pytest.approx(0.5) and _f("mean_luminance", v) == pytest.approx(0.5)


def test_black_image_is_finite():
    # Safety-filtered generators output all-black images: a real case, not an error.
    v = nss_vector(np.zeros((128, 96, 3), np.uint8))
    assert np.isfinite(v).all()
    assert _f("clip_black", v) == 1.0 and _f("entropy_bits", v) == 0.0


def test_max_side_downscales_but_keeps_original_size():
    import cv2

    big = cv2.resize(skdata.astronaut(), (1024, 768), interpolation=cv2.INTER_CUBIC)
    v = nss_vector(big, max_side=512)
    small = cv2.resize(big, (512, 384), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(v[:36], brisque_features(luma(small) / 255.0))
    assert _f("width", v) == 1024 and _f("height", v) == 768
    np.testing.assert_allclose(nss_vector(big, max_side=None)[:36], brisque_features(luma(big) / 255.0))


def test_key_and_options():
    assert NSS().key() != NSS(max_side=512).key()
    a, b = NSS(), NSS()
    a.setup("cpu", "fp32")
    b.setup("cpu", "bf16")  # float64 numpy whatever the run's precision: same key
    assert a.key() == b.key()
    with pytest.raises(ValueError, match="no option"):
        NSS(max_sid=3)


def test_tiny_image_is_item_error():
    with pytest.raises(ItemError, match="too small"):
        nss_vector(np.zeros((8, 100, 3), np.uint8))


def test_runner_protocol_batches_of_different_sizes(tmp_path):
    ex = NSS()
    ex.setup()
    items = []
    for i, (h, w) in enumerate([(64, 80), (120, 50), (200, 200)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(_texture(i, 256)[:h, :w]).save(p)
        items.append(Item(i, str(i), str(p)))
    rows = ex.compute(ex.collate([ex.prepare(it) for it in items]), items)
    assert rows.shape == (3, 49) and rows.dtype == np.float32
    for it, row in zip(items, rows):  # same as computing one by one, in float32
        np.testing.assert_allclose(row, nss_vector(np.asarray(Image.open(it.path).convert("RGB"))), rtol=1e-6)
    assert rows[:, FEATURE_NAMES.index("width")].tolist() == [80, 50, 200]
