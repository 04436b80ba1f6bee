"""EIMN — Efficient Information Modulation Network (Liu et al., ECAI 2023).

Written from the facts in ``specs/EIMN.md`` (official code: liux520/EIMN). The module tree mirrors the
official one name for name (``head.0``, ``block{i}.0.attn.proj_value.0``, ``norm{i}`` ...) so the released
``EIMN_{A,L}_x{2,3,4}.pth`` files load with ``strict=True`` and no key mapping.

Deviations from the official code, all exact up to float rounding (checked against the goldens):

* channels-first LayerNorm (mean/var over dim 1) instead of NCHW→NHWC permutes around ``nn.LayerNorm``;
* SiLU gate out of place instead of ``mul_``;
* DFFM's ``spatial_expand`` on ``concat[local, global.expand(H, W)]`` becomes a broadcast sum of the two
  halves of its weight, so no op needs the runtime H×W.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelNorm, check_input, spatial_mean
from .registry import register_model

__all__ = ["EIMN", "eimn_a", "eimn_l"]


ChannelsFirstLayerNorm = ChannelNorm  # LayerNorm over channels, keys as nn.LayerNorm(C)



class MOLRCM(nn.Module):
    """Multi-order long-range convolutional modulation (the block's attention replacement).

    A 1x1 value is gated by SiLU of a multi-dilation depthwise context built from the query.
    """

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.split = (int(3 / 8 * dim), int(1 / 8 * dim), dim - int(3 / 8 * dim) - int(1 / 8 * dim))
        c1, _, c3 = self.split
        # Definition order follows the official file so state_dict order matches too.
        self.region = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.spatial_1 = nn.Conv2d(c1, c1, 5, padding=4, dilation=2, groups=c1)
        self.spatial_2 = nn.Conv2d(c3, c3, 7, padding=9, dilation=3, groups=c3)
        self.fusion = nn.Conv2d(dim, dim, 1)
        self.proj_value = nn.Sequential(nn.Conv2d(dim, dim, 1))
        self.proj_query = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU())
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        value = self.proj_value(u)
        query = self.region(self.proj_query(u))
        c1, c2, _ = self.split  # slices, not split_with_sizes: XNNPACK delegates slices
        q1, q2, q3 = query[:, :c1], query[:, c1:c1 + c2], query[:, c1 + c2:]
        ctx = self.fusion(torch.cat([self.spatial_1(q1), q2, self.spatial_2(q3)], dim=1))
        return self.out(F.silu(ctx) * value)


class DFFM(nn.Module):
    """Dynamic feature flow modulation: channel gate from the global mean, spatial gate from local+global."""

    def __init__(self, dim: int = 64, reduction: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * reduction)
        self.hidden = hidden
        self.norm = ChannelsFirstLayerNorm(dim, eps=1e-6)
        self.global_reduce = nn.Conv2d(dim, hidden, 1)
        self.local_reduce = nn.Conv2d(dim, hidden, 1)
        self.channel_expand = nn.Conv2d(hidden, dim, 1)
        self.spatial_expand = nn.Conv2d(2 * hidden, 1, 1)  # in-channels: [local | global]

    two_pass_mean = True  # float exports: see spatial_mean; edgesr.quantize turns it off for int8

    def norm_folds(self) -> list[tuple[str, list[nn.Module], bool]]:
        """n is read by local_reduce and, through the (linear) spatial mean, by global_reduce: both 1×1."""
        return [("norm", [self.global_reduce, self.local_reduce], True)]

    def export_form(self) -> nn.Module:
        """The halves of ``spatial_expand`` as constant buffers: XNNPACK delegates no conv whose weight is
        computed in the graph."""
        w_local, w_global = torch.split(self.spatial_expand.weight.detach(), self.hidden, dim=1)
        self.register_buffer("w_local", w_local.clone(), persistent=False)
        self.register_buffer("w_global", w_global.clone(), persistent=False)
        self.__class__ = _ExportDFFM
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.norm(z)
        g = F.gelu(self.global_reduce(spatial_mean(n, self.two_pass_mean)))  # whole-image mean
        loc = F.gelu(self.local_reduce(n))
        c_attn = torch.sigmoid(self.channel_expand(g))
        # conv1x1(concat[loc, g.expand(H, W)]) == conv(loc, W_local) + conv(g, W_global) + b, broadcast.
        w_local, w_global = torch.split(self.spatial_expand.weight, self.hidden, dim=1)
        s_logit = F.conv2d(loc, w_local) + F.conv2d(g, w_global, self.spatial_expand.bias)
        return z * c_attn * torch.sigmoid(s_logit)


class _ExportDFFM(DFFM):
    """DFFM as exported: ``spatial_expand`` read from the constant halves made by ``export_form``."""

    def export_form(self) -> nn.Module:
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.norm(z)
        g = F.gelu(self.global_reduce(spatial_mean(n, self.two_pass_mean)))
        loc = F.gelu(self.local_reduce(n))
        c_attn = torch.sigmoid(self.channel_expand(g))
        s_logit = F.conv2d(loc, self.w_local) + F.conv2d(g, self.w_global, self.spatial_expand.bias)
        return z * c_attn * torch.sigmoid(s_logit)


class SADFFM(nn.Module):
    """Gated depthwise FFN followed by DFFM (the block's MLP replacement)."""

    def __init__(self, dim: int = 64, mlp_ratio: float = 2.66) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.linear_in = nn.Conv2d(dim, 2 * hidden, 1)
        self.SAL = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.linear_out = nn.Conv2d(hidden, dim, 1)
        self.DFFM = DFFM(dim)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        y = self.SAL(self.linear_in(v))
        h = y.shape[1] // 2  # slices, not chunk: XNNPACK delegates slices
        return self.DFFM(self.linear_out(F.gelu(y[:, :h]) * y[:, h:]))


class EIMNBlock(nn.Module):
    """Pre-BatchNorm block with two layer-scaled residual branches (MOLRCM, SADFFM)."""

    def __init__(self, dim: int = 64, mlp_ratio: float = 2.66, layer_scale_init: float = 1e-2) -> None:
        super().__init__()
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MOLRCM(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = SADFFM(dim, mlp_ratio)

    def norm_folds(self) -> list[tuple[str, list[nn.Module], bool]]:
        """(norm attribute, the 1×1 convs that read it, shift foldable): BN1 feeds the value and query
        projections, BN2 the MLP's input projection, nothing else."""
        return [("norm1", [self.attn.proj_value[0], self.attn.proj_query[0]], True),
                ("norm2", [self.mlp.linear_in], True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class EIMN(nn.Module):
    """head conv → S × (EIMNBlock, LayerNorm) → + head output → conv + PixelShuffle.

    Input RGB in [0, 1] with no mean shift; output is not clamped (as the official model).
    BatchNorm needs ``eval()`` for inference (``edgesr.models.create`` returns eval models).
    """

    def __init__(self, scale: int = 4, embed_dims: int = 64, num_stages: int = 14,
                 mlp_ratio: float = 2.66, in_chans: int = 3) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_size = 1  # stride-1 convs with same padding: any H, W >= 1
        self.num_stages = num_stages
        self.head = nn.Sequential(nn.Conv2d(in_chans, embed_dims, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(embed_dims, in_chans * self.scale ** 2, 3, padding=1),
                                  nn.PixelShuffle(self.scale))
        # Official names: block{i} is a one-element ModuleList, norm{i} the stage LayerNorm (i from 1).
        for i in range(1, num_stages + 1):
            setattr(self, f"block{i}", nn.ModuleList([EIMNBlock(embed_dims, mlp_ratio)]))
            setattr(self, f"norm{i}", ChannelsFirstLayerNorm(embed_dims, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size, "EIMN")
        identity = self.head(x)
        y = identity
        for i in range(1, self.num_stages + 1):
            for blk in getattr(self, f"block{i}"):
                y = blk(y)
            y = getattr(self, f"norm{i}")(y)
        return self.tail(identity + y)


@register_model
def eimn_a(scale: int = 4, **overrides: Any) -> EIMN:
    """EIMN_A: 14 stages (860K / 868K / 880K parameters at x2 / x3 / x4)."""
    return EIMN(scale=scale, **{"embed_dims": 64, "num_stages": 14, **overrides})


@register_model
def eimn_l(scale: int = 4, **overrides: Any) -> EIMN:
    """EIMN_L: 16 stages (981K / 990K / 1002K parameters at x2 / x3 / x4)."""
    return EIMN(scale=scale, **{"embed_dims": 64, "num_stages": 16, **overrides})
