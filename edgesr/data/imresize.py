"""MATLAB-compatible bicubic resize: the degradation every SR benchmark's LR images were made with.

PIL, OpenCV and ``torch.nn.functional.interpolate`` all call something "bicubic" that differs from
MATLAB's ``imresize(img, 1/s, 'bicubic')`` (a = -0.75 and no antialiasing in OpenCV/torch; fixed-point
weights and other edge rules in PIL: only ~82% of PIL's Set5 x2 LR values equal MATLAB's), and the
difference moves PSNR by tenths of a dB. This module reproduces MATLAB's algorithm:

* cubic convolution kernel with a = -0.5;
* on downscaling the kernel is stretched by 1/scale (antialiasing), so it spans 4/scale input pixels;
* output pixel ``x`` (1-based) samples input position ``u = x/scale + 0.5*(1 - 1/scale)``;
* out-of-range taps are clamped to the edge pixel (MATLAB clamps the indices, replicating the end
  points). Several Python ports mirror the image instead (``[1..n, n..1]``); checked against
  MATLAB's own output that leaves ~1% of all LR values (the outer two rows/columns) off by up to 12;
* the weights of each output pixel are normalised to sum to 1;
* dimensions are resized one at a time, the one with the smallest scale first (rows first on a tie);
* for uint8 input, MATLAB keeps the intermediate image (after the first dimension) in uint8, i.e.
  rounded and saturated to [0, 255]. Keeping it in float instead leaves 10-15% of the values off by
  one, and up to 12 where the cubic overshoot that MATLAB clipped is carried into the second pass.

With these rules the output equals MATLAB's bit for bit on Set5/Set14/BSD100 at x2/x3/x4
(``benchmarks/resize_vs_matlab.py``).

Each dimension is resized with a precomputed (out_len × taps) weight/index table applied as a gather
per tap (at most 4/scale + 2 taps), so the cost is linear in the image size, with no per-pixel loops.
"""

from __future__ import annotations

import math
from typing import TypeVar, overload

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, written as MATLAB's ``cubic`` helper evaluates it."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based source indices (both out_len × taps) for resizing one dimension.

    Follows MATLAB's ``contributions``; taps whose weight is zero for every output pixel are dropped
    (MATLAB's "kill" step: they would only add exact zeros).
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        def kernel(d: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * d)

        kernel_width = kernel_width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may be out of range
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Out-of-range taps read the edge pixel (MATLAB clamps the indices: "replicating end-points").
    idx0 = np.clip(idx.astype(np.int64) - 1, 0, in_len - 1)
    keep = np.any(weights != 0, axis=0)
    return np.ascontiguousarray(weights[:, keep]), np.ascontiguousarray(idx0[:, keep])


def _output_size(in_hw: tuple[int, int], scale: float | None,
                 size: tuple[int, int] | None) -> tuple[tuple[int, int], tuple[float, float]]:
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale= or size=")
    if scale is not None:
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"imresize scale must be a positive number, got {scale}")
        out = (int(math.ceil(in_hw[0] * scale)), int(math.ceil(in_hw[1] * scale)))
        return out, (scale, scale)
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"imresize size must be two positive integers (height, width), got {size}")
    out = (int(size[0]), int(size[1]))
    return out, (out[0] / in_hw[0], out[1] / in_hw[1])


def _plan(in_hw: tuple[int, int], scale: float | None, size: tuple[int, int] | None):
    """(dim, weights, indices) per pass, in MATLAB's order: smallest scale first, rows first on a tie."""
    out_hw, scales = _output_size(in_hw, scale, size)
    if min(in_hw) < 1:
        raise ValueError(f"cannot resize an empty image of size {in_hw}")
    order = sorted((0, 1), key=lambda d: scales[d])  # stable: rows before columns on equal scales
    return out_hw, [(d, *contributions(in_hw[d], out_hw[d], scales[d])) for d in order]


def _resize_dim_np(img: np.ndarray, axis: int, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    shape = [1] * img.ndim
    shape[axis] = w.shape[0]
    out_shape = img.shape[:axis] + (w.shape[0],) + img.shape[axis + 1:]
    acc = np.zeros(out_shape, dtype=np.float64)
    tap = np.empty(out_shape, dtype=np.float64)
    for k in range(w.shape[1]):  # a handful of taps, each a vectorised gather over the whole image
        np.take(img, idx[:, k], axis=axis, out=tap)
        tap *= w[:, k].reshape(shape)
        acc += tap
    return acc


def _to_int(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """MATLAB's float→integer conversion: saturate, then round half away from zero."""
    info = np.iinfo(dtype)
    return np.floor(np.clip(values, info.min, info.max) + 0.5).astype(dtype)


def _resize_numpy(img: np.ndarray, scale: float | None, size: tuple[int, int] | None) -> np.ndarray:
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H×W or H×W×C array, got shape {img.shape}")
    if img.dtype == np.bool_ or not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"imresize does not support arrays of dtype {img.dtype}")
    _, passes = _plan(img.shape[:2], scale, size)
    is_int = np.issubdtype(img.dtype, np.integer)
    out = img.astype(np.float64)
    for d, w, idx in passes:
        out = _resize_dim_np(out, d, w, idx)
        if is_int:  # MATLAB keeps the intermediate in the input's integer class
            out = _to_int(out, img.dtype).astype(np.float64)
    return out.astype(img.dtype)


def _resize_torch(img: torch.Tensor, scale: float | None, size: tuple[int, int] | None) -> torch.Tensor:
    if img.ndim not in (3, 4):
        raise ValueError(f"imresize expects a C×H×W or N×C×H×W tensor, got shape {tuple(img.shape)}")
    out_dtype = img.dtype if img.is_floating_point() else torch.get_default_dtype()
    _, passes = _plan((img.shape[-2], img.shape[-1]), scale, size)
    out = img.to(torch.float64)
    for d, w, idx in passes:
        axis = img.ndim - 2 + d
        wt = torch.from_numpy(w).to(out.device)
        it = torch.from_numpy(idx).to(out.device)
        shape = [1] * out.ndim
        shape[axis] = w.shape[0]
        out_shape = list(out.shape)
        out_shape[axis] = w.shape[0]
        acc = out.new_zeros(out_shape)
        tap = out.new_empty(out_shape)
        for k in range(w.shape[1]):
            torch.index_select(out, axis, it[:, k], out=tap)
            acc.add_(tap.mul_(wt[:, k].reshape(shape)))
        out = acc
    return out.to(out_dtype)


@overload
def imresize(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray: ...
@overload
def imresize(img: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor: ...


def imresize(img, scale=None, size=None):
    """Resize like MATLAB ``imresize(img, scale | [h w], 'bicubic')`` (antialiased when shrinking).

    ``img``: numpy H×W or H×W×C, or a torch C×H×W / N×C×H×W tensor. Give exactly one of ``scale``
    (output size ``ceil(in * scale)``, as MATLAB) or ``size=(out_h, out_w)``.

    numpy integer input (uint8) is computed in float64 and returned in its dtype, rounded half away
    from zero and saturated per pass, as MATLAB does; float arrays come back in their dtype, unclipped.
    Tensors are computed in float64 on their device and returned in their float dtype (integer
    tensors come back as the default float dtype; values are not clipped or rounded).
    """
    if isinstance(img, torch.Tensor):
        return _resize_torch(img, scale, size)
    if isinstance(img, np.ndarray):
        return _resize_numpy(img, scale, size)
    raise TypeError(f"imresize expects a numpy array or torch tensor, got {type(img).__name__}")


def modcrop(img: ArrayLike, scale: int) -> ArrayLike:
    """Crop height and width down to multiples of ``scale`` (top-left kept), so HR = scale × LR exactly.

    numpy arrays are H×W[×C]; tensors are [..]×H×W. Returns a view, not a copy.
    """
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale}")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2], img.shape[-1]
        return img[..., : h - h % scale, : w - w % scale]
    if img.ndim not in (2, 3):
        raise ValueError(f"modcrop expects an H×W or H×W×C array, got shape {img.shape}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]
