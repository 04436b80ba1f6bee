"""PSNR/SSIM on known inputs, the BT.601 luma, and SSIM cross-checked against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import DATA, need_shared
from edgesr.data import imresize, load_image, modcrop
from edgesr.metrics import psnr_rgb, psnr_y, rgb_to_y, ssim_rgb, ssim_y

RNG = np.random.default_rng(0)
IMG = RNG.integers(20, 230, (40, 48, 3), dtype=np.uint8)


def test_y_of_known_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 64, 32]]],
                       dtype=np.uint8)
    y = rgb_to_y(colours)[0]
    expected = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966,
                16 + (65.481 * 128 + 128.553 * 64 + 24.966 * 32) / 255]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    assert y.dtype == np.float64  # not rounded to uint8


def test_psnr_of_constant_offset_is_hand_computable():
    hr = np.full((20, 24, 3), 100, np.uint8)
    sr = hr + np.uint8(3)  # every RGB value +3 -> Y moves by 3 * (65.481+128.553+24.966)/255 = 3 * 219/255
    assert psnr_rgb(sr, hr, 0) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-12)
    dy = 3 * 219 / 255
    assert psnr_y(sr, hr, 2) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)


def test_crop_removes_border_on_each_side():
    hr = IMG.copy()
    sr = IMG.copy()
    sr[:3] = 0
    sr[:, -3:] = 255  # damage only a 3-pixel frame (top and right)
    assert math.isinf(psnr_y(sr, hr, 3)) and math.isinf(psnr_rgb(sr, hr, 3))
    assert ssim_y(sr, hr, 3) == 1.0
    assert psnr_y(sr, hr, 2) < 40


def test_identical_images():
    assert psnr_y(IMG, IMG, 4) == math.inf
    assert psnr_rgb(IMG, IMG, 0) == math.inf
    assert ssim_y(IMG, IMG, 4) == pytest.approx(1.0, abs=1e-12)
    assert ssim_rgb(IMG, IMG, 0) == pytest.approx(1.0, abs=1e-12)


def test_input_validation():
    with pytest.raises(ValueError, match=r"\(40, 48, 3\).*\(40, 47, 3\)"):
        psnr_y(IMG, IMG[:, :47], 2)
    with pytest.raises(ValueError, match="uint8"):
        ssim_y(IMG.astype(np.float64), IMG, 2)
    with pytest.raises(ValueError, match="crop"):
        psnr_y(IMG, IMG, 20)
    with pytest.raises(ValueError, match="11"):
        ssim_y(IMG, IMG, 15)  # 10×18 left: smaller than the SSIM window


def _bicubic_pair(name: str, scale: int) -> tuple[np.ndarray, np.ndarray]:
    hr = modcrop(load_image(need_shared(DATA / "Set5" / name)), scale)
    return imresize(imresize(hr, scale=1 / scale), scale=scale), hr


def test_ssim_matches_skimage_on_y():
    """skimage filters the whole image (reflect padding) and then drops (win-1)/2 = 5 pixels per side
    before averaging, which leaves exactly the windows our 'valid' filtering keeps: same value."""
    metrics = pytest.importorskip("skimage.metrics")
    sr, hr = _bicubic_pair("bird.png", 3)
    c = 3
    expected = metrics.structural_similarity(
        rgb_to_y(sr[c:-c, c:-c]), rgb_to_y(hr[c:-c, c:-c]), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255)
    assert ssim_y(sr, hr, c) == pytest.approx(expected, abs=1e-12)
    per_channel = [metrics.structural_similarity(
        sr[c:-c, c:-c, k].astype(np.float64), hr[c:-c, c:-c, k].astype(np.float64), gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, data_range=255) for k in range(3)]
    assert ssim_rgb(sr, hr, c) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_psnr_matches_skimage_on_y():
    metrics = pytest.importorskip("skimage.metrics")
    sr, hr = _bicubic_pair("head.png", 2)
    expected = metrics.peak_signal_noise_ratio(rgb_to_y(hr[2:-2, 2:-2]), rgb_to_y(sr[2:-2, 2:-2]), data_range=255)
    assert psnr_y(sr, hr, 2) == pytest.approx(expected, abs=1e-10)


def test_set5_bicubic_matches_the_literature():
    """Bicubic Set5 is the most-quoted baseline: 33.66 dB / 0.9299 at x2 and 28.42 / 0.8104 at x4
    (published to 2 and 4 decimals). Our exact values are pinned too, so any drift in resize or
    metrics shows up far below the literature's rounding."""
    names = ("baby.png", "bird.png", "butterfly.png", "head.png", "woman.png")
    for scale, published, ours in ((2, (33.66, 0.9299), (33.674147, 0.930287)),
                                   (4, (28.42, 0.8104), (28.430235, 0.811136))):
        pairs = [_bicubic_pair(n, scale) for n in names]
        psnr = float(np.mean([psnr_y(sr, hr, scale) for sr, hr in pairs]))
        ssim = float(np.mean([ssim_y(sr, hr, scale) for sr, hr in pairs]))
        assert abs(psnr - published[0]) < 0.02 and abs(ssim - published[1]) < 0.001, (scale, psnr, ssim)
        assert psnr == pytest.approx(ours[0], abs=1e-5) and ssim == pytest.approx(ours[1], abs=1e-6)


def test_paired_drop_se_is_the_standard_error_of_the_mean_paired_difference():
    from edgesr.metrics import paired_drop_se

    ref, row = [30.0, 31.0, 32.0], [29.9, 31.0, 31.8]
    assert paired_drop_se(ref, row) == pytest.approx(np.std([0.1, 0.0, 0.2], ddof=1) / np.sqrt(3))
    assert paired_drop_se([30.0], [29.0]) is None and paired_drop_se([1.0, 2.0], [0.5, 1.5]) == 0.0
