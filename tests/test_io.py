"""Image loading normalises every file to H×W×3 uint8 RGB; bad files are one-line EdgesrErrors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from edgesr.data import IMAGE_EXTENSIONS, load_image, save_image, to_tensor, to_uint8
from edgesr.errors import EdgesrError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)


def _png16(path, values: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour), rows alternating the
    None/Sub/Up filters so that decoding really has to unfilter."""
    h, w = values.shape[:2]
    data = values.astype(">u2").reshape(h, -1).view(np.uint8).reshape(h, -1).astype(np.int16)
    bpp = 2 * (values.shape[2] if values.ndim == 3 else 1)
    rows = []
    for y in range(h):
        kind = y % 3
        if kind == 0:
            filt = data[y]
        elif kind == 1:  # Sub: minus the byte one pixel to the left
            filt = data[y] - np.concatenate([np.zeros(bpp, np.int16), data[y][:-bpp]])
        else:  # Up: minus the byte above
            filt = data[y] - data[y - 1]
        rows.append(bytes([kind]) + (filt % 256).astype(np.uint8).tobytes())

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def _expected_16_to_8(v: np.ndarray) -> np.ndarray:
    return np.round(v.astype(np.float64) / 257).astype(np.uint8)


def _values16(shape) -> np.ndarray:
    v = RNG.integers(0, 65536, shape, dtype=np.uint16)
    v.flat[:4] = [0, 65535, 128, 32896]  # ends, and values just around rounding boundaries
    return v


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb_lossless_roundtrip(tmp_path, suffix):
    path = save_image(tmp_path / f"a{suffix}", RGB)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)
    assert suffix in IMAGE_EXTENSIONS


def test_jpeg_loads_as_rgb(tmp_path):
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 24, axis=0).repeat(3, 2)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).max() <= 4


def test_grey_is_replicated(tmp_path):
    grey = RGB[:, :, 0]
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (13, 17, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    Image.fromarray(grey > 127).save(tmp_path / "bw.png")  # 1-bit
    assert set(np.unique(load_image(tmp_path / "bw.png"))) <= {0, 255}


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped(tmp_path, mode):
    alpha = RNG.integers(0, 256, RGB.shape[:2], dtype=np.uint8)
    colour = RGB if mode == "RGBA" else RGB[:, :, :1]
    Image.fromarray(np.dstack([colour, alpha]), mode).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, np.broadcast_to(colour, RGB.shape))  # colour kept, not premultiplied


def test_palette_is_expanded(tmp_path):
    im = Image.fromarray(RGB).quantize(colors=16)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(im.convert("RGB")))
    im.save(tmp_path / "pt.png", transparency=0)
    np.testing.assert_array_equal(load_image(tmp_path / "pt.png"), np.asarray(im.convert("RGB")))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_rounds(tmp_path, suffix):
    v = _values16((9, 11))
    Image.fromarray(v).save(tmp_path / f"g16{suffix}")  # Pillow writes mode I;16
    out = load_image(tmp_path / f"g16{suffix}")
    assert out.shape == (9, 11, 3)
    np.testing.assert_array_equal(out[:, :, 1], _expected_16_to_8(v))


@pytest.mark.parametrize("channels,colour_type", [(3, 2), (4, 6), (2, 4)])
def test_16bit_colour_png_rounds_not_truncates(tmp_path, channels, colour_type):
    v = _values16((9, 11, channels))
    _png16(tmp_path / "c16.png", v, colour_type)
    out = load_image(tmp_path / "c16.png")
    expected = _expected_16_to_8(v[:, :, :3] if channels >= 3 else np.repeat(v[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(out, expected)
    assert (expected[:, :, 0] != (v[:, :, 0] >> 8)).any()  # Pillow's high-byte truncation would fail


def test_16bit_colour_tiff_rounds(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    v = _values16((9, 11, 3))
    tifffile.imwrite(tmp_path / "c16.tif", v, photometric="rgb")
    np.testing.assert_array_equal(load_image(tmp_path / "c16.tif"), _expected_16_to_8(v))


def test_corrupt_truncated_and_missing_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    path = save_image(tmp_path / "whole.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "head.png").write_bytes(data[:20])
    Image.fromarray(RGB).save(tmp_path / "a.jpg")
    jpg = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(jpg[: len(jpg) // 2])
    for name in ("junk.png", "half.png", "head.png", "half.jpg", "missing.png"):
        with pytest.raises(EdgesrError) as info:
            load_image(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message
    with pytest.raises(EdgesrError, match="directory"):
        load_image(tmp_path)


def test_exif_orientation_is_ignored(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    Image.fromarray(RGB).save(tmp_path / "o.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "o.jpg").shape == RGB.shape  # stored pixels, not rotated


def test_save_is_atomic_and_validates(tmp_path):
    target = tmp_path / "out" / "sr.png"
    save_image(target, RGB)
    save_image(target, RGB[:, :, 0])  # overwrite in place (grey)
    assert sorted(p.name for p in target.parent.iterdir()) == ["sr.png"]  # no temp files left behind
    np.testing.assert_array_equal(load_image(target)[:, :, 2], RGB[:, :, 0])
    with pytest.raises(EdgesrError, match="suffix"):
        save_image(tmp_path / "sr.xyz", RGB)
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "f.png", RGB.astype(np.float32))


def test_tensor_conversions_roundtrip_and_rounding():
    t = to_tensor(RGB)
    assert t.shape == (1, 3, 13, 17) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    np.testing.assert_array_equal(to_uint8(t), RGB)
    np.testing.assert_array_equal(to_uint8(t[0]), RGB)
    # clamp, then round half to even: 0.5/255 -> 0, 1.5/255 -> 2, 2.5/255 -> 2
    vals = torch.tensor([-0.3, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255, 1.7])
    x = vals.view(1, 1, 1, -1).expand(1, 3, 1, 6).contiguous()
    expected = (vals.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert list(expected) == [0, 0, 2, 2, 254, 255]
    np.testing.assert_array_equal(to_uint8(x)[0, :, 0], expected)
    with pytest.raises(ValueError):
        to_tensor(RGB.astype(np.float32))
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(2, 3, 4, 4))
