"""LAMNet — Linear Adaptive Mixer Network (zononhzy/LAMNet, arXiv 2024).

Written from the facts in ``specs/LAMNet.md``. Module and parameter names follow the official
``lamnet_arch.py`` so official (BasicSR) state_dicts load strictly, ``kernel_map`` buffers included.

Deviations from the official code, all exact up to float rounding (checked against the goldens):

* FSA (focal separable attention) is the CUDA-only op ``FSAttn`` in the official code; here it is
  :func:`focal_separable_attention`, pure pad + slice + multiply-add (exportable, trains identically);
* the information-exchange module uses mean/mul/sum reductions instead of ``view(B, C, H*W)`` + ``bmm``;
* the RGB mean is a non-persistent buffer instead of an attribute re-assigned in ``forward``;
* ReLU is out of place.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .layers import ChannelNorm, channel_mean, check_input, spatial_mean
from .registry import register_model

__all__ = ["LAMNet", "lamnet", "lamnet_large", "focal_separable_attention", "generate_kernel_map",
           "RGB_MEAN"]

RGB_MEAN = (0.4488, 0.4371, 0.4040)

Taps = Sequence[tuple[int, int]]


# --------------------------------------------------------------------------------------------------
# FSA
# --------------------------------------------------------------------------------------------------

def generate_kernel_map(kernel_size: int, kernel_loc: Sequence[int],
                        kernel_stride: Sequence[int]) -> list[tuple[int, int]]:
    """Tap table [(start, length)] sorted by start, as the official ``generate_kernel_map_1d``.

    Per side: tap 0 = (0, 1); then for every (loc_j, stride_j) add ``loc_j - previous loc`` taps of
    length ``stride_j`` placed contiguously; the negative side mirrors the positive one. The taps'
    segments tile the window ``-(P//2) .. P//2`` exactly once.
    """
    if kernel_size % 2 != 1 or kernel_loc[-1] != kernel_size // 2 + 1:
        raise ValueError(f"kernel_loc[-1] must equal kernel_size // 2 + 1 for an odd kernel_size, got "
                         f"kernel_size={kernel_size}, kernel_loc={list(kernel_loc)}")
    if len(kernel_loc) != len(kernel_stride):
        raise ValueError("kernel_loc and kernel_stride need the same length")
    side = [(0, 1)]
    prev_loc = 1
    for loc, stride in zip(kernel_loc, kernel_stride):
        for _ in range(loc - prev_loc):
            start, length = side[-1]
            side.append((start + length, stride))
        prev_loc = loc
    negative = [(-start, length) for start, length in side[1:]]
    return sorted(negative + side)


def _patch_radius(taps: Taps) -> int:
    """Half window: the farthest offset any tap reaches (11 for the official 13-tap table)."""
    return max(abs(s) + n - 1 for s, n in taps)


def _as_taps(kernel_map: torch.Tensor | Taps) -> list[tuple[int, int]]:
    """Python ints for the slice bounds, so forward never reads tensor values (static graph)."""
    if isinstance(kernel_map, torch.Tensor):  # convenience for standalone use; not export-friendly
        return [(int(s), int(n)) for s, n in kernel_map.tolist()]
    return [(int(s), int(n)) for s, n in kernel_map]


def focal_separable_attention(x: torch.Tensor, weight: torch.Tensor, kernel_map: torch.Tensor | Taps,
                              dim: int, num_heads: int) -> torch.Tensor:
    """Pure-PyTorch FSA along one spatial axis (``dim=-1``: horizontal, ``dim=-2``: vertical).

    ``y[n,c,p] = sum_k weight[n, K*g(c)+k, p] / len_k * sum_i x~[n, c, p + start_k + i*sign(start_k)]``
    with x~ zero outside the image (the divisor counts padded samples), ``g(c)`` the head of channel
    ``c`` (heads are contiguous channel blocks) and ``weight`` laid out head-major (N, heads*K, H, W).

    ``kernel_map`` is the [(start, length)] tap table; pass Python ints (not a tensor) when tracing
    so slices stay static.
    """
    taps = _as_taps(kernel_map)
    axis = dim % 4
    if x.dim() != 4 or axis not in (2, 3):
        raise ValueError("FSA expects N×C×H×W input and dim -1 (horizontal) or -2 (vertical)")
    n, c, h, w = x.shape
    length = x.shape[axis]
    r = _patch_radius(taps)
    xp = F.pad(x, (r, r, 0, 0) if axis == 3 else (0, 0, r, r))
    heads = weight.reshape(n, num_heads, 1, len(taps), h, w)  # head-major: channel g*K + k
    out = None
    for k, (start, size) in enumerate(taps):
        lo = start if start >= 0 else start - size + 1  # lowest offset of the segment
        seg = xp.narrow(axis, r + lo, length)
        for i in range(1, size):
            seg = seg + xp.narrow(axis, r + lo + i, length)
        if size > 1:
            seg = seg / size  # divisor counts zero padding (count_include_pad)
        term = seg.reshape(n, num_heads, c // num_heads, h, w) * heads[:, :, :, k]
        out = term if out is None else out + term
    return out.reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

class LayerNormUnchanged(ChannelNorm):
    """Channels-first LayerNorm with (1, C, 1, 1) ``alpha``/``beta`` (official names and shapes)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(dim, eps, weight=False, bias=False)
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.alpha.flatten(), self.beta.flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.normalize(x) + self.beta



class PreNormResidual(nn.Module):
    """``fn(norm(x)) * alpha + x`` with a learnable per-channel residual scale."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.norm = LayerNormUnchanged(dim)
        self.fn = fn

    def norm_folds(self) -> list[tuple[str, list[nn.Module], bool]]:
        """The pre-norm is read only by the first 1×1 conv of ``fn`` (ULM ``proj_in``, DGFN ``project_in``)."""
        first = getattr(self.fn, "proj_in", None) or getattr(self.fn, "project_in", None)
        return [("norm", [first], True)] if first is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) * self.alpha + x


class DGFN(nn.Module):
    """Dual-gate FFN: both halves gated by GELU(x1): concat[GELU(x1)·x1, GELU(x1)·x2]."""

    def __init__(self, dim: int, expansion_factor: float = 1.0) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project_out = nn.Conv2d(2 * hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(self.project_in(x))
        h = y.shape[1] // 2  # slices, not chunk: XNNPACK delegates slices
        x1, x2 = y[:, :h], y[:, h:]
        gate = F.gelu(x1)
        return self.project_out(torch.cat([gate * x1, gate * x2], dim=1))


def spatial_interaction(x_c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """IEM spatial output: x_c gated per pixel by its channel-mean correlation with mean(a over H×W)."""
    q = a.mean(dim=(2, 3), keepdim=True)  # (N, D, 1, 1), whole-image mean
    return x_c * torch.sigmoid((x_c * q).mean(dim=1, keepdim=True))


def channel_interaction(x_c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """IEM channel output: a gated per channel by its spatial-mean correlation with mean(x_c over C)."""
    r = x_c.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    return a * torch.sigmoid((a * r).mean(dim=(2, 3), keepdim=True))


class LSAMixer(nn.Module):
    """ULM: a channel branch (bottleneck MLP) and a spatial branch (horizontal then vertical FSA with
    per-pixel tanh kernels), exchanged through IEM and fused by a 1x1 conv."""

    def __init__(self, dim: int = 64, kernel_size: int = 13, kernel_loc: Sequence[int] = (4, 6, 7),
                 kernel_stride: Sequence[int] = (1, 2, 4), num_head: int = 4) -> None:
        super().__init__()
        half = dim // 2
        if half % num_head:
            raise ValueError(f"dim // 2 = {half} is not divisible by num_head = {num_head}")
        self.taps = tuple(generate_kernel_map(kernel_size, kernel_loc, kernel_stride))
        self.num_head = num_head
        patch = 2 * _patch_radius(self.taps) + 1
        self.register_buffer("kernel_map", torch.tensor(self.taps, dtype=torch.int32))
        self.register_load_state_dict_post_hook(_check_kernel_map)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.h_kernel = nn.Sequential(
            nn.Conv2d(half, half, (1, patch), padding=(0, patch // 2), groups=half),
            nn.Conv2d(half, num_head * kernel_size, 1))
        self.v_kernel = nn.Sequential(
            nn.Conv2d(half, half, (patch, 1), padding=(patch // 2, 0), groups=half),
            nn.Conv2d(half, num_head * kernel_size, 1))
        self.channel_branch = nn.Sequential(nn.Conv2d(half, half // 2, 1), nn.ReLU(),
                                            nn.Conv2d(half // 2, half, 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.proj_in(x).chunk(2, dim=1)
        x_c = self.channel_branch(x1)
        a = focal_separable_attention(x2, torch.tanh(self.h_kernel(x2)), self.taps, -1, self.num_head)
        a = focal_separable_attention(a, torch.tanh(self.v_kernel(a)), self.taps, -2, self.num_head)
        return self.proj_out(torch.cat([spatial_interaction(x_c, a), channel_interaction(x_c, a)], dim=1))

    def export_form(self) -> nn.Module:
        """Slices for ``chunk``, 1×1-conv channel means in the IEM and FSA as convs (:func:`fsa_conv`), with
        the constant kernels as buffers."""
        half = self.channel_branch[0].in_channels
        like = self.proj_in.weight.detach()
        self.register_buffer("avg", torch.full((1, half, 1, 1), 1.0 / half, dtype=like.dtype,
                                               device=like.device), persistent=False)
        box_h, gather, ones = fsa_kernels(list(self.taps), half, self.num_head, -1, like)
        box_v, _, _ = fsa_kernels(list(self.taps), half, self.num_head, -2, like)
        for name, t in (("fsa_box_h", box_h), ("fsa_box_v", box_v), ("fsa_gather", gather), ("fsa_ones", ones)):
            self.register_buffer(name, t, persistent=False)
        self.__class__ = _ExportLSAMixer
        return self


def fsa_kernels(taps: list[tuple[int, int]], channels: int, num_heads: int, dim: int,
                like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constant kernels that turn focal separable attention into three convs (see :func:`fsa_conv`).

    * ``box`` (C·K, 1, 1, P) or (C·K, 1, P, 1): depthwise, output channel c·K + k = the mean of channel c
      over tap k's segment (zero padding counted, as the official divisor);
    * ``gather`` (C·K, K, 1, 1), used with ``groups=heads``: 0/1 kernel copying weight channel g(c)·K + k to
      channel c·K + k (K multiply-adds per output instead of heads·K for a dense 0/1 matrix);
    * ``ones`` (C, K, 1, 1): grouped 1×1 conv summing the K taps of each channel.
    """
    k_taps, r = len(taps), _patch_radius(taps)
    box = torch.zeros(channels * k_taps, 1, 2 * r + 1)
    for k, (start, size) in enumerate(taps):
        lo = start if start >= 0 else start - size + 1
        box[k::k_taps, 0, r + lo:r + lo + size] = 1.0 / size
    box = box[:, :, None, :] if dim % 4 == 3 else box[:, :, :, None]
    if channels % num_heads:
        raise ValueError(f"{channels} channels do not split into {num_heads} heads")
    gather = torch.zeros(channels * k_taps, k_taps, 1, 1)
    for k in range(k_taps):
        gather[k::k_taps, k] = 1.0
    ones = torch.ones(channels, k_taps, 1, 1)
    return tuple(t.to(dtype=like.dtype, device=like.device) for t in (box, gather, ones))  # type: ignore[return-value]


def fsa_conv(x: torch.Tensor, weight: torch.Tensor, box: torch.Tensor, gather: torch.Tensor,
             ones: torch.Tensor) -> torch.Tensor:
    """``focal_separable_attention`` as depthwise box conv, grouped 1×1 gather conv, multiply, grouped 1×1 sum.

    Four delegated ops instead of ~100 pad/narrow/reshape/select ops per call (LAMNet has 48 calls), with the
    same math up to summation order. Costs C·K-channel intermediates (K = 13 taps) at input resolution.
    """
    c = x.shape[1]
    pad = (box.shape[-1] // 2, box.shape[-2] // 2)
    seg = F.conv2d(x, box, padding=(pad[1], pad[0]), groups=c)
    heads = weight.shape[1] // gather.shape[1]
    return F.conv2d(seg * F.conv2d(weight, gather, groups=heads), ones, groups=c)


class _ExportLSAMixer(LSAMixer):
    """ULM as exported (see :meth:`LSAMixer.export_form`)."""

    two_pass_mean = True  # float exports: see spatial_mean; edgesr.quantize turns it off for int8

    def export_form(self) -> nn.Module:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_in(x)
        h = y.shape[1] // 2
        x1, x2 = y[:, :h], y[:, h:]
        x_c = self.channel_branch(x1)
        a = fsa_conv(x2, torch.tanh(self.h_kernel(x2)), self.fsa_box_h, self.fsa_gather, self.fsa_ones)
        a = fsa_conv(a, torch.tanh(self.v_kernel(a)), self.fsa_box_v, self.fsa_gather, self.fsa_ones)
        q = spatial_mean(a, self.two_pass_mean)
        spatial = x_c * torch.sigmoid(channel_mean(x_c * q, self.avg))
        r = channel_mean(x_c, self.avg)
        channel = a * torch.sigmoid(spatial_mean(a * r, self.two_pass_mean))
        return self.proj_out(torch.cat([spatial, channel], dim=1))


def _check_kernel_map(module: LSAMixer, incompatible_keys: Any) -> None:
    """forward uses the Python tap table; refuse a loaded ``kernel_map`` that disagrees with it."""
    expected = torch.tensor(module.taps, dtype=torch.int32)
    if not torch.equal(module.kernel_map.cpu(), expected):
        raise CheckpointError(f"loaded kernel_map {module.kernel_map.tolist()} differs from the "
                              f"configured tap table {list(module.taps)}")


class LAMixerBlock(nn.Module):
    """A group: ``num_blocks`` (ULM, DGFN) pre-norm residual pairs, then a scaled group residual."""

    def __init__(self, dim: int, num_blocks: int, expansion_factor: float, **ulm: Any) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        layers: list[nn.Module] = []
        for _ in range(num_blocks):
            layers.append(PreNormResidual(dim, LSAMixer(dim, **ulm)))
            layers.append(PreNormResidual(dim, DGFN(dim, expansion_factor)))
        self.mixers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixers(x) * self.alpha + x


class LAMNet(nn.Module):
    """mean shift → conv3x3 → G groups + conv3x3 (scaled global residual) → conv3x3 + PixelShuffle → un-shift.

    Input RGB in [0, 1]; output not clamped (as the official model).
    """

    def __init__(self, scale: int = 4, in_chans: int = 3, dim: int = 64, num_groups: int = 4,
                 num_blocks: int = 6, kernel_size: int = 13, kernel_loc: Sequence[int] = (4, 6, 7),
                 kernel_stride: Sequence[int] = (1, 2, 4), num_head: int = 4,
                 expansion_factor: float = 1.0, img_range: float = 1.0) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_size = 1  # stride-1 everywhere, FSA zero-pads: any H, W >= 1
        self.img_range = img_range
        # A buffer (moves with .to()/.half()) but not persistent: official checkpoints have no such key.
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.shallow_feature_extraction = nn.Conv2d(in_chans, dim, 3, padding=1)
        ulm = dict(kernel_size=kernel_size, kernel_loc=tuple(kernel_loc), kernel_stride=tuple(kernel_stride),
                   num_head=num_head)
        self.deep_feature_extraction = nn.Sequential(
            *[LAMixerBlock(dim, num_blocks, expansion_factor, **ulm) for _ in range(num_groups)],
            nn.Conv2d(dim, dim, 3, padding=1))
        self.upsample = nn.Sequential(nn.Conv2d(dim, in_chans * self.scale ** 2, 3, padding=1),
                                      nn.PixelShuffle(self.scale))
        self.apply(_init_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size, "LAMNet")
        f0 = self.shallow_feature_extraction((x - self.mean) * self.img_range)
        y = self.deep_feature_extraction(f0) * self.alpha + f0
        return self.upsample(y) / self.img_range + self.mean


def _init_conv(m: nn.Module) -> None:
    """Official training init: truncated normal (std 0.02, cut at ±2) conv weights, zero biases."""
    if isinstance(m, nn.Conv2d):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_CONFIG = dict(dim=64, num_blocks=6, kernel_size=13, kernel_loc=(4, 6, 7), kernel_stride=(1, 2, 4),
               num_head=4, expansion_factor=1.0)


@register_model
def lamnet(scale: int = 4, **overrides: Any) -> LAMNet:
    """LAMNet: 4 groups × 6 (ULM, DGFN) pairs (828K / 837K / 849K parameters at x2 / x3 / x4)."""
    return LAMNet(scale=scale, **{**_CONFIG, "num_groups": 4, **overrides})


@register_model
def lamnet_large(scale: int = 4, **overrides: Any) -> LAMNet:
    """LAMNet-large: 5 groups × 6 pairs (1024K / 1033K / 1045K parameters at x2 / x3 / x4)."""
    return LAMNet(scale=scale, **{**_CONFIG, "num_groups": 5, **overrides})
