"""MATLAB-bicubic resize against MATLAB's own LR images (fast subset; the full proof is
benchmarks/resize_vs_matlab.py), plus shapes, dtypes and the torch path."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, need_shared
from edgesr.data import imresize, load_image, modcrop
from edgesr.data.imresize import contributions

REF = DATA / "reference_lr_matlab"


def _name_map(set_name: str) -> dict[str, str]:
    out = {}
    for line in need_shared(REF / set_name / "name_map.txt").read_text().splitlines():
        parts = line.split()
        out[Path(parts[0].split(":")[-1]).stem] = Path(parts[1]).stem
    return out


CASES = [("Set5", ref, stem, s) for ref, stem in sorted(_name_map("Set5").items()) for s in (2, 3, 4)]
# bridge is Set14's grey image (stored grey in the reference pack); comic has odd sizes (250×361).
CASES += [("Set14", ref, stem, s) for ref, stem in sorted(_name_map("Set14").items())
          if stem in ("bridge", "comic") for s in (2, 3, 4)]


@pytest.mark.parametrize("set_name,ref,stem,scale", CASES, ids=[f"{c[2]}-x{c[3]}" for c in CASES])
def test_matches_matlab_reference(set_name, ref, stem, scale):
    hr = modcrop(load_image(need_shared(DATA / set_name / f"{stem}.png")), scale)
    ref_lr = load_image(need_shared(REF / set_name / f"X{scale}" / f"{ref}_SRF_{scale}_LR.png"))
    ref_hr = load_image(need_shared(REF / set_name / f"X{scale}" / f"{ref}_SRF_{scale}_HR.png"))
    np.testing.assert_array_equal(hr, ref_hr)  # our mod-crop is MATLAB's
    lr = imresize(hr, scale=1.0 / scale)
    assert lr.dtype == np.uint8 and lr.shape == ref_lr.shape
    diff = np.abs(lr.astype(np.int16) - ref_lr)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    assert (diff == 0).all()  # in practice the match is exact


def test_grey_2d_equals_replicated_rgb():
    grey = np.asarray(load_image(need_shared(DATA / "Set14" / "bridge.png")))[:, :, 0]
    lr2d = imresize(grey, scale=0.25)
    lr3d = imresize(np.repeat(grey[:, :, None], 3, axis=2), scale=0.25)
    assert lr2d.shape == (128, 128)
    for c in range(3):
        np.testing.assert_array_equal(lr3d[:, :, c], lr2d)


@pytest.mark.parametrize("h,w,scale,expected", [
    (37, 50, 0.25, (10, 13)), (36, 48, 1 / 3, (12, 16)), (9, 12, 4, (36, 48)), (7, 5, 2.5, (18, 13)),
    (255, 255, 1 / 3, (85, 85)), (1, 1, 3, (3, 3)),
])
def test_output_size_is_ceil(h, w, scale, expected):
    img = np.zeros((h, w, 3), np.uint8)
    assert imresize(img, scale=scale).shape == expected + (3,)


def test_size_argument_and_errors():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert imresize(img, size=(17, 90)).shape == (17, 90, 3)
    np.testing.assert_array_equal(imresize(img, size=(20, 30)), imresize(img, scale=0.5))
    for kwargs in ({}, {"scale": 0.5, "size": (20, 30)}, {"scale": 0}, {"scale": -2}, {"size": (0, 3)}):
        with pytest.raises(ValueError):
            imresize(img, **kwargs)
    with pytest.raises(TypeError):
        imresize([[1, 2], [3, 4]], scale=2)


def test_constant_image_is_preserved_and_weights_normalised():
    for scale in (0.25, 1 / 3, 0.5, 2, 3):
        w, idx = contributions(23, int(np.ceil(23 * scale)), scale)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        assert idx.min() >= 0 and idx.max() <= 22
        img = np.full((23, 23, 3), 77, np.uint8)
        assert (imresize(img, scale=scale) == 77).all()


def test_float_dtypes_are_kept_and_not_clipped():
    img = np.zeros((16, 16), np.float32)
    img[:, 8:] = 1.0
    out = imresize(img, scale=2)
    assert out.dtype == np.float32
    assert out.max() > 1.0 and out.min() < 0.0  # cubic overshoot survives for float input
    u8 = imresize((img * 255).astype(np.uint8), scale=2)
    assert u8.dtype == np.uint8 and u8.max() == 255 and u8.min() == 0  # saturated for uint8


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 2, 3])
def test_torch_matches_numpy(scale):
    rng = np.random.default_rng(1)
    img = rng.random((2, 3, 31, 45))
    t_out = imresize(torch.from_numpy(img), scale=scale)
    assert t_out.dtype == torch.float64 and t_out.shape[:2] == (2, 3)
    for n in range(2):
        np_out = imresize(img[n].transpose(1, 2, 0), scale=scale)
        np.testing.assert_array_equal(t_out[n].numpy().transpose(1, 2, 0), np_out)
    t32 = imresize(torch.from_numpy(img[0]).float(), scale=scale)  # C×H×W float32 stays float32
    assert t32.dtype == torch.float32
    torch.testing.assert_close(t32, t_out[0].float(), atol=1e-5, rtol=0)


def test_upscale_runs_and_roundtrip_is_close():
    hr = modcrop(load_image(need_shared(DATA / "Set5" / "butterfly.png")), 4)
    lr = imresize(hr, scale=0.25)
    up = imresize(lr, scale=4)
    assert up.shape == hr.shape and up.dtype == np.uint8
    mse = np.mean((up.astype(np.float64) - hr) ** 2)
    assert 10 * np.log10(255**2 / mse) > 20  # bicubic x4 on butterfly: ~21 dB RGB


def test_modcrop_numpy_and_torch():
    a = np.zeros((37, 50, 3), np.uint8)
    assert modcrop(a, 4).shape == (36, 48, 3) and modcrop(a[:, :, 0], 3).shape == (36, 48)
    assert modcrop(torch.zeros(1, 3, 37, 50), 4).shape == (1, 3, 36, 48)
    with pytest.raises(ValueError):
        modcrop(a, 0)


def test_urban100_sized_downscale_is_fast():
    img = np.random.default_rng(2).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    imresize(img[:64, :64], scale=0.25)  # warm-up
    start = time.perf_counter()
    out = imresize(img, scale=0.25)
    assert out.shape == (192, 256, 3)
    assert time.perf_counter() - start < 1.0
