"""SCNet — fully 1×1 convolutional shift-conv network (Wu et al., MIR 2024, arXiv 2307.16140).

Written from the facts in ``specs/SCNet.md`` (official code: Aitical/SCNet, licence CC BY-NC 4.0 — the
architecture is re-implemented here; no official weights are shipped). The module tree mirrors the official
one (``conv_first``, ``body.{i}.conv{1,2}``, ``upconv{1,2}.up_layer.{k}``, ``conv_hr``, ``conv_last``) so
BasicSR checkpoints load with ``strict=True``.

Deviations from the official code, all exact (checked against the goldens):

* Shift8 is zero-pad + 8 slices + ``cat`` instead of ``zeros_like`` + slice assignment (which lowers to
  index_put / slice_scatter, poorly supported by mobile delegates);
* ReLU / LeakyReLU and the final ``+= base`` are out of place;
* the official ``pixel_shuffle = nn.Identity()`` placeholder is dropped (no parameters, no effect).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_input
from .registry import register_model

__all__ = ["SCNet", "Shift8", "ShiftDepthwise", "shift_kernel", "fuse_shift_conv", "scnet_t", "scnet_t_ps"]

# (dy, dx) per channel group j: out[h, w] = x[h + dy, w + dx], zero outside the image (spec §2.1).
SHIFT8_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1), (1, 1), (1, -1), (-1, 1), (-1, -1))


class Shift8(nn.Module):
    """Parameter-free spatial mixing: channel group j (of 8 groups of ``groups`` channels) is shifted by
    one pixel in the j-th of the 8 directions, with zero fill."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)
        self.register_buffer("kernel", shift_kernel(self.groups), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pad + slices + concat in eager PyTorch (fastest there); under ``torch.export`` one depthwise 3×3
        conv with one-hot kernels (exact: products with 1 and 0), the one op every delegate runs natively."""
        if torch.compiler.is_exporting():
            return F.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=self.kernel.shape[0])
        return shift8(x, self.groups)

    def to_depthwise(self) -> nn.Conv2d:
        """The frozen one-hot depthwise conv equal to this shift (``edgesr.reparam.shift_to_conv``)."""
        conv = ShiftDepthwise(self.groups, device=self.kernel.device)
        with torch.no_grad():
            conv.weight.copy_(self.kernel)
        return conv.requires_grad_(False)


def shift_kernel(groups: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot depthwise kernels [8·groups, 1, 3, 3]: channel c of group j is 1 at tap (1 + dy_j, 1 + dx_j)."""
    k = torch.zeros(8 * groups, 1, 3, 3, dtype=dtype)
    for j, (dy, dx) in enumerate(SHIFT8_OFFSETS):
        k[j * groups:(j + 1) * groups, 0, 1 + dy, 1 + dx] = 1.0
    return k


class ShiftDepthwise(nn.Conv2d):
    """Shift8 as a frozen one-hot depthwise 3×3 conv (the deploy form; its weight is in the state_dict).

    Under ``torch.export`` it is that conv; in eager PyTorch it computes the same values with pad + slices,
    which is faster there (SCNet-T x4 eager: the conv made deploy 11 % slower than eval,
    ``benchmarks/reparam.py``). Both are exact: each output is one input times 1.0.
    """

    def __init__(self, groups: int, **kw: object) -> None:
        c = 8 * int(groups)
        super().__init__(c, c, 3, padding=1, groups=c, bias=False, **kw)  # type: ignore[arg-type]
        self.shift_groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return super().forward(x)
        return shift8(x, self.shift_groups)


@torch.no_grad()
def fuse_shift_conv(shift: Shift8, conv: nn.Conv2d) -> nn.Conv2d:
    """The dense 3×3 conv equal to ``conv(shift(·))`` for a plain 1×1 ``conv``:
    ``W3[o, c, 1 + dy_c, 1 + dx_c] = W[o, c]``. A pointwise f with f(0) = 0 commutes with a zero-fill shift,
    so ``conv(f(shift(z)))`` fuses the same way (SCNet's ReLU / LeakyReLU between them)."""
    if type(conv) is not nn.Conv2d or conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
        raise ValueError("only a plain 1×1 conv can absorb a shift")
    if conv.in_channels != 8 * shift.groups:
        raise ValueError(f"shift has {8 * shift.groups} channels, conv reads {conv.in_channels}")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.zero_()
    taps = shift_kernel(shift.groups, conv.weight.dtype).to(conv.weight.device)[:, 0]  # [C, 3, 3] one-hot
    fused.weight.copy_(conv.weight[:, :, 0, 0][:, :, None, None] * taps[None])
    if conv.bias is not None:
        fused.bias.copy_(conv.bias)
    return fused.train(conv.training)


def _fusable(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.groups == 1


def _fuse_in_sequence(seq: nn.Sequential) -> None:
    """Shift8 directly before a 1×1 conv (the upsampler stages) -> the fused dense 3×3."""
    for i in range(len(seq) - 1):
        if isinstance(seq[i], Shift8) and _fusable(seq[i + 1]):
            seq[i + 1] = fuse_shift_conv(seq[i], seq[i + 1])
            seq[i] = nn.Identity()


def shift8(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Shift channel group j of ``x`` by ``SHIFT8_OFFSETS[j]``, zero fill (pad + 8 slices + concat)."""
    g = groups
    if x.shape[1] != 8 * g:
        raise ValueError(f"Shift8 with groups={g} needs {8 * g} channels, got {x.shape[1]}")
    h, w = x.shape[-2], x.shape[-1]
    p = F.pad(x, (1, 1, 1, 1))
    parts = [p[:, j * g:(j + 1) * g, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
             for j, (dy, dx) in enumerate(SHIFT8_OFFSETS)]
    return torch.cat(parts, dim=1)


class ResidualBlockShift(nn.Module):
    """x + conv2(ReLU(Shift8(conv1(x)))), both convs 1×1 (res_scale 1)."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 1)
        self.shift = Shift8(num_feat // 8)
        _default_init(self.conv1, self.conv2)

    def fuse_shift(self) -> None:
        """conv2(relu(shift(z))) = conv2(shift(relu(z))) -> one dense 3×3 conv (``shift_to_conv(mode="dense")``)."""
        if isinstance(self.shift, Shift8) and _fusable(self.conv2):
            self.conv2 = fuse_shift_conv(self.shift, self.conv2)
            self.shift = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.shift(self.conv1(x))))


class UpShiftMLP(nn.Module):
    """Default upsampler stage: bilinear ×k on the features, then 1×1 conv, LeakyReLU(0.02), Shift8, 1×1 conv."""

    def __init__(self, num_feat: int, factor: int) -> None:
        super().__init__()
        self.up_layer = nn.Sequential(
            nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False),
            nn.Conv2d(num_feat, num_feat, 1), nn.LeakyReLU(0.02), Shift8(num_feat // 8),
            nn.Conv2d(num_feat, num_feat, 1))

    def fuse_shift(self) -> None:
        _fuse_in_sequence(self.up_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_layer(x)


class UpShiftPixelShuffle(nn.Module):
    """Pixel-shuffle upsampler stage: 1×1 conv, LeakyReLU(0.02), Shift8, 1×1 conv to k²·C, PixelShuffle(k).

    Avoids bilinear resizing of 64-channel features at HR (the MLP stage's memory hotspot).
    """

    def __init__(self, num_feat: int, factor: int) -> None:
        super().__init__()
        self.up_layer = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 1), nn.LeakyReLU(0.02), Shift8(num_feat // 8),
            nn.Conv2d(num_feat, num_feat * factor ** 2, 1), nn.PixelShuffle(factor))

    def fuse_shift(self) -> None:
        _fuse_in_sequence(self.up_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_layer(x)


def _default_init(*modules: nn.Module, scale: float = 0.1) -> None:
    """The official (BasicSR ``default_init_weights``) init: kaiming-normal conv weights × 0.1, zero biases."""
    with torch.no_grad():
        for module in modules:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                    m.weight.mul_(scale)
                    if m.bias is not None:
                        m.bias.zero_()


def _stages(scale: int) -> tuple[int, ...]:
    """Upsampling factors per stage: one ×s stage for x2/x3, two ×2 stages for x4."""
    if scale not in (2, 3, 4):
        raise ValueError(f"SCNet supports scales 2, 3 and 4, got {scale}")
    return (2, 2) if scale == 4 else (scale,)


class SCNet(nn.Module):
    """conv_first → 16 × ResidualBlockShift → upsampler stage(s) → conv_hr → conv_last, + bilinear(input).

    Every conv is 1×1; spatial mixing comes only from Shift8 and the bilinear resizes, so any H, W >= 1
    works and tiling with >= 20 LR px overlap is exact. Output is not clamped (as the official model).
    """

    feature_node = "upconv1"  # its input is the final body feature map (for feature distillation)

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 16, use_pixelshuffle: bool = False) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_size = 1
        stage = UpShiftPixelShuffle if use_pixelshuffle else UpShiftMLP
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 1)
        self.body = nn.Sequential(*[ResidualBlockShift(num_feat) for _ in range(num_block)])
        factors = _stages(self.scale)
        self.upconv1 = stage(num_feat, factors[0])
        if len(factors) == 2:
            self.upconv2 = stage(num_feat, factors[1])
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 1)
        _default_init(*[m for m in (self.conv_first, self.upconv1, getattr(self, "upconv2", None),
                                    self.conv_hr, self.conv_last) if m is not None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size, "SCNet")
        feat = F.leaky_relu(self.conv_first(x), 0.1)
        out = F.leaky_relu(self.upconv1(self.body(feat)), 0.1)
        if self.scale == 4:
            out = F.leaky_relu(self.upconv2(out), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


@register_model
def scnet_t(scale: int = 4, **overrides: Any) -> SCNet:
    """SCNet-T (D64B16) with the default bilinear + shift-MLP upsampler (146,051 / 146,051 / 154,371)."""
    return SCNet(scale=scale, **{"num_feat": 64, "num_block": 16, "use_pixelshuffle": False, **overrides})


@register_model
def scnet_t_ps(scale: int = 4, **overrides: Any) -> SCNet:
    """SCNet-T with the pixel-shuffle upsampler (158,531 / 179,331 / 179,331 parameters)."""
    return SCNet(scale=scale, **{"num_feat": 64, "num_block": 16, "use_pixelshuffle": True, **overrides})
