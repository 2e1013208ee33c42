"""Awkward image files: each is decoded as a viewer shows it, or is a per-item error saying why.

The files are built here (PIL / OpenCV / raw bytes), so the expected pixels are known.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from extractors import media
from extractors.base import ItemError
from extractors.media import load_image


def _rgb(path) -> np.ndarray:
    im = load_image(path)
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


@pytest.fixture
def gradient() -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return np.dstack([x * 4, y * 5, (x + y) * 2]).astype(np.uint8)


# ---------------------------------------------------------------- broken files -> ItemError
def test_truncated_png(tmp_path, gradient):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible: truncation cuts pixels
    full = tmp_path / "full.png"
    Image.fromarray(noisy).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ItemError, match=r"cut\.png.*(truncated|broken|decode)"):
        load_image(cut)


def test_truncated_jpeg(tmp_path, gradient):
    full = tmp_path / "full.jpg"
    Image.fromarray(np.tile(gradient, (4, 4, 1))).save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ItemError, match=r"cut\.jpg.*truncated"):
        load_image(cut)


def test_truncated_jpeg_even_if_pil_was_told_to_accept_them(tmp_path, gradient, monkeypatch):
    # Another library may switch LOAD_TRUNCATED_IMAGES on globally; grey-filled pixels must not pass.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    full = tmp_path / "full.jpg"
    Image.fromarray(np.tile(gradient, (4, 4, 1))).save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ItemError, match="truncated"):
        load_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_zero_byte_and_missing_and_text(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ItemError, match=r"empty file \(0 bytes\).*empty\.png"):
        load_image(empty)
    with pytest.raises(ItemError, match=r"file not found.*nope\.png"):
        load_image(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 10)
    with pytest.raises(ItemError, match=r"not an image file.*notes\.png"):
        load_image(text)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height (8-bit grey) with an empty image stream."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(60000, 60000))  # 3.6 G pixels announced, 60 bytes on disk
    assert bomb.stat().st_size < 200
    with pytest.raises(ItemError, match=r"too large.*bomb\.png"):
        load_image(bomb)
    # Just over our limit (below PIL's own error threshold, where PIL only warns).
    bomb.write_bytes(_png_header_only(17000, 17000))
    with pytest.raises(ItemError, match=r"too large: 17000x17000.*bomb\.png"):
        load_image(bomb)


def test_bomb_limit_is_the_module_setting(tmp_path, gradient, monkeypatch):
    path = tmp_path / "ok.png"
    Image.fromarray(gradient).save(path)
    assert load_image(path).size == (64, 48)
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 64 * 48 - 1)
    with pytest.raises(ItemError, match="decompression bomb"):
        load_image(path)


# ---------------------------------------------------------------- decoded as a viewer shows them
def test_png_named_jpg_decodes(tmp_path, gradient):
    path = tmp_path / "actually_png.jpg"
    Image.fromarray(gradient).save(path, format="PNG")
    np.testing.assert_array_equal(_rgb(path), gradient)


def test_grayscale_becomes_equal_channels(tmp_path, gradient):
    grey = gradient[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    out = _rgb(path)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_16bit_grey_png_scaled_by_bit_depth(tmp_path):
    bright = np.full((20, 30), 32768, np.uint16)
    bright[:, :10] = 65535
    path = tmp_path / "g16.png"
    Image.fromarray(bright).save(path)
    assert Image.open(path).mode.startswith("I")
    out = _rgb(path)
    assert (out[:, :10] == 255).all() and (np.abs(out[:, 10:] - 128) <= 1).all()
    # A dark 16-bit image stays dark: the range comes from the bit depth, not from the content.
    dark = np.full((20, 30), 200, np.uint16)
    Image.fromarray(dark).save(path)
    assert _rgb(path).max() <= 1


def test_16bit_rgb_png(tmp_path):
    import cv2

    rgb16 = np.zeros((16, 16, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 4112  # 255, 128, 16 in 8 bits
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb16[..., ::-1])
    out = _rgb(path)
    assert (np.abs(out - np.array([255, 128, 16])) <= 1).all()


def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[:, :16, 0] = 255  # pure cyan ink on the left
    cmyk[:, 16:, 3] = 255  # pure black ink on the right
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = _rgb(path)
    assert (np.abs(out[4:-4, 2:12] - np.array([0, 255, 255])) <= 8).all()  # cyan
    assert (out[4:-4, 20:30] <= 8).all()  # black


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :5, 3] = 255  # opaque red
    rgba[:, 5:8, 3] = 128  # half-transparent red
    rgba[:, 8:, 3] = 0  # fully transparent (its colour must not show)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = _rgb(path)
    assert (out[:, :5] == [255, 0, 0]).all()
    assert (np.abs(out[:, 5:8] - [255, 127, 127]) <= 1).all()
    assert (out[:, 8:] == 255).all()


def test_grey_alpha(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)
    la[:, :4, 1] = 255  # opaque black, then transparent
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    out = _rgb(path)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (12, 6))
    im.putpalette([0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    px = np.zeros((6, 12), np.uint8)
    px[:, 6:] = 1
    im.putdata(px.ravel().tolist())
    im.info["transparency"] = 0  # index 0 (blue) is transparent
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    out = _rgb(path)
    assert (out[:, :6] == 255).all()  # transparent -> white background, not blue
    assert (out[:, 6:] == [0, 255, 0]).all()


def test_palette_gif_without_transparency(tmp_path):
    im = Image.fromarray(np.full((8, 8, 3), (200, 30, 30), np.uint8)).convert("P", palette=Image.ADAPTIVE)
    path = tmp_path / "still.gif"
    im.save(path)
    assert (np.abs(_rgb(path) - [200, 30, 30]) <= 4).all()


def test_exif_orientation_6_is_rotated(tmp_path):
    # Stored 40 wide x 20 high, red block at the stored top-left. Orientation 6 means
    # "rotate 90 degrees clockwise to display": shown 20 wide x 40 high, block at top-right.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:5, :5] = [255, 0, 0]
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=100)
    out = _rgb(path)
    assert out.shape == (40, 20, 3)
    assert out[1, 18, 0] > 200 and out[1, 18, 1] < 60  # top-right is red
    assert out[1, 1, 0] < 60  # top-left is not


def test_broken_exif_keeps_the_image(tmp_path, gradient, monkeypatch):
    from PIL import ImageOps

    def boom(im):
        raise ValueError("corrupt EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", boom)
    path = tmp_path / "x.png"
    Image.fromarray(gradient).save(path)
    np.testing.assert_array_equal(_rgb(path), gradient)


def test_bad_images_are_item_errors_in_an_extractor(tmp_path, gradient):
    """Through the runner protocol (prepare): good items work, bad ones raise ItemError."""
    from extractors.base import Item
    from extractors.nss import NSS

    ex = NSS()
    ex.setup()
    good = tmp_path / "good.png"
    Image.fromarray(np.tile(gradient, (2, 2, 1))).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert ex.prepare(Item(0, "good", str(good))).shape == (ex.output_dim(),)
    with pytest.raises(ItemError, match="empty file"):
        ex.prepare(Item(1, "bad", str(bad)))
