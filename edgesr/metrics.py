"""PSNR and SSIM exactly as SR papers report them (the BasicSR / MATLAB conventions).

* Inputs are uint8 H×W×3 RGB: the SR output must be rounded to uint8 first (``data.io.to_uint8``),
  because that is the image papers score. Non-uint8 input is rejected rather than guessed at.
* ``crop`` pixels are removed from every side before anything else (papers use crop = scale).
* ``*_y`` metrics use luma of MATLAB's ``rgb2ycbcr`` (ITU-R BT.601, studio swing):
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on [0, 255] values, kept as float, not
  rounded: that is BasicSR's ``to_y_channel`` (``bgr2ycbcr(img / 255, y_only=True) * 255``) and
  MATLAB's rgb2ycbcr on double input. Rounding Y to uint8 (MATLAB's rgb2ycbcr on uint8 input)
  raises PSNR by up to ~0.05 dB on Set5 bicubic. BasicSR passes Y through float32; edgesr keeps
  float64, which differs from BasicSR by < 3e-7 dB PSNR and < 1e-8 SSIM (measured on Set5).
* SSIM is Wang et al. (2004) as BasicSR's ``calculate_ssim``: 11×11 Gaussian window with σ = 1.5,
  'valid' filtering (no padding: only windows fully inside the image), K1 = 0.01, K2 = 0.03,
  L = 255, float64, mean of the SSIM map; on several channels, the mean over channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_WIN, _SIGMA = 11, 1.5
_C1, _C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2


def _gaussian_1d(size: int = _WIN, sigma: float = _SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian (what cv2.getGaussianKernel(11, 1.5) returns); the 2-D window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


_GAUSS = _gaussian_1d()


def _check_pair(sr: np.ndarray, hr: np.ndarray, crop: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"{name}: images differ in shape: sr {sr.shape} vs hr {hr.shape}")
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ValueError(f"{name}: expects uint8 images in [0, 255] (round the SR output with to_uint8 first), "
                         f"got sr {sr.dtype} and hr {hr.dtype}")
    if sr.ndim not in (2, 3):
        raise ValueError(f"{name}: expects H×W×C or H×W images, got shape {sr.shape}")
    crop = int(crop)
    if crop < 0:
        raise ValueError(f"{name}: crop must be >= 0, got {crop}")
    h, w = sr.shape[:2]
    if 2 * crop >= h or 2 * crop >= w:
        raise ValueError(f"{name}: crop {crop} leaves nothing of a {h}×{w} image")
    if crop:
        sr, hr = sr[crop:-crop, crop:-crop], hr[crop:-crop, crop:-crop]
    return sr, hr


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma of MATLAB ``rgb2ycbcr`` (BT.601) on [0, 255] RGB, float64, unrounded: values in [16, 235]."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an H×W×3 RGB image, got shape {img.shape}")
    return img.astype(np.float64) @ (_Y_WEIGHTS / 255.0) + 16.0


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR (dB) of two arrays of equal shape, no crop or colour conversion; identical arrays give ``inf``."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Separable 11×11 Gaussian filter, 'valid' region only: output is (H-10)×(W-10)."""
    n = _GAUSS.size
    h, w = x.shape
    rows = np.zeros((h - n + 1, w), dtype=np.float64)
    for k in range(n):  # 11 shifted, weighted slices: vectorised over the whole image
        rows += _GAUSS[k] * x[k:k + h - n + 1, :]
    out = np.zeros((h - n + 1, w - n + 1), dtype=np.float64)
    for k in range(n):
        out += _GAUSS[k] * rows[:, k:k + w - n + 1]
    return out


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape[0] < _WIN or a.shape[1] < _WIN:
        raise ValueError(f"SSIM needs at least {_WIN}×{_WIN} pixels after the border crop, got {a.shape[0]}×{a.shape[1]}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a) - mu_a2
    var_b = _filter_valid(b * b) - mu_b2
    cov = _filter_valid(a * b) - mu_ab
    ssim_map = ((2.0 * mu_ab + _C1) * (2.0 * cov + _C2)) / ((mu_a2 + mu_b2 + _C1) * (var_a + var_b + _C2))
    return float(ssim_map.mean())


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """PSNR (dB) on BT.601 luma after cropping ``crop`` pixels per side; identical images give ``inf``."""
    sr, hr = _check_pair(sr, hr, crop, "psnr_y")
    return psnr(rgb_to_y(sr), rgb_to_y(hr))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """SSIM (Wang et al., BasicSR convention) on BT.601 luma after cropping ``crop`` pixels per side."""
    sr, hr = _check_pair(sr, hr, crop, "ssim_y")
    return _ssim_plane(rgb_to_y(sr), rgb_to_y(hr))


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """PSNR (dB) over all channels (one MSE over every value); identical images give ``inf``."""
    sr, hr = _check_pair(sr, hr, crop, "psnr_rgb")
    return psnr(sr, hr)


def ssim_rgb(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """SSIM computed per channel and averaged (BasicSR's ``calculate_ssim`` without ``test_y_channel``)."""
    sr, hr = _check_pair(sr, hr, crop, "ssim_rgb")
    if sr.ndim == 2:
        return _ssim_plane(sr, hr)
    return float(np.mean([_ssim_plane(sr[:, :, c], hr[:, :, c]) for c in range(sr.shape[2])]))


def paired_drop_se(ref: Sequence[float], row: Sequence[float]) -> float | None:
    """Standard error of the mean of ``ref[i] - row[i]`` (None below 2 pairs).

    A dataset's mean drop moves with which images it holds: single images move by several hundredths of a dB
    either way (EIMN-A x4 int8: SD 0.024 dB over 32 validation images, 0.04 on Set14), so a drop closer to a
    budget than about two standard errors is not resolved by those images."""
    d = np.asarray(ref, dtype=np.float64) - np.asarray(row, dtype=np.float64)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) >= 2 else None
