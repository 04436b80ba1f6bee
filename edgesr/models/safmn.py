"""SAFMN — Spatially-Adaptive Feature Modulation Network (Sun et al., ICCV 2023).

Written from the facts in ``specs/SAFMN.md`` (official code: sunny2109/SAFMN). The module tree mirrors the
official one name for name (``to_feat``, ``feats.{i}.safm.mfr.{j}``, ``feats.{i}.ccm.ccm.{0,2}``,
``to_img.0``; ``norm.gamma`` for the NTIRE variant) so official / BasicSR checkpoints load with
``strict=True`` and no key mapping.

Deviations from the official code, all exact (checked against the goldens):

* channel split by slicing instead of ``chunk`` (slices are delegated by XNNPACK, ``split`` is not);
* for pooling levels whose factor divides H and W, ``adaptive_max_pool2d`` becomes ``max_pool2d`` with
  kernel = stride = factor, and the nearest upsample becomes a depthwise ``conv_transpose2d`` with a ones
  kernel (each output reads exactly one input, times 1.0 — bit-exact). Both lower to delegated ops
  everywhere; the adaptive pool has no lowering in TFLite/ExecuTorch. Other sizes keep the official ops;
  the branch is on static shape ints, so ``torch.export`` records a guard instead of a data-dependent branch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelNorm, check_input
from .registry import register_model

__all__ = ["SAFMN", "SAFMNNTIRE", "safmn", "safmn_l", "safmn_ntire"]


def _aligned(h: int, w: int, factor: int) -> bool:
    """True when the adaptive pooling grid of ``factor`` is a plain non-overlapping ``factor`` grid."""
    return h % factor == 0 and w % factor == 0


def pool_modulate_up(x: torch.Tensor, conv: nn.Conv2d, factor: int, ones: torch.Tensor) -> torch.Tensor:
    """One SAFM pyramid level: max-pool by ``factor``, depthwise conv, nearest upsample back to H×W.

    ``ones`` is the [C, 1, factor, factor] kernel of the exact nearest upsample as a depthwise transposed conv
    (used when aligned: XNNPACK delegates it, its nearest resize it does not), or a dense [C, C, f, f] one that is
    the identity over channels (LiteRT, whose int8 grouped transposed conv is slower than the rest of the network).
    """
    h, w = x.shape[-2], x.shape[-1]
    if _aligned(h, w, factor):
        y = conv(F.max_pool2d(x, kernel_size=factor, stride=factor))
        if ones.shape[1] != 1:  # a dense [C, C, f, f] kernel (identity over channels): LiteRT's form
            return F.conv_transpose2d(y, ones, stride=factor)
        return F.conv_transpose2d(y, ones, stride=factor, groups=y.shape[1])
    y = conv(F.adaptive_max_pool2d(x, (h // factor, w // factor)))
    return F.interpolate(y, size=(h, w), mode="nearest")


ChannelsFirstLayerNorm = ChannelNorm  # the official channels_first LayerNorm (weight/bias [C], eps 1e-6)



class GRN(nn.Module):
    """Global response normalisation (NTIRE variant, after ``to_feat``): a whole-image op.

    G[c] = ||x_c||_2 over H×W; out = gamma·(x·G/(mean_c G + 1e-6)) + beta + x. gamma = beta = 0 at init.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sqrt((x * x).sum(dim=(2, 3), keepdim=True))
        nx = g / (g.mean(dim=1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation: a 4-level max-pool pyramid of depthwise convs on channel
    quarters, fused by a 1×1 conv, whose GELU gates the module input.

    ``factors`` are the pooling factors per level (level 0 factor 1 = no pooling): (1, 2, 4, 8) in SAFMN,
    (1, 4, 8, 16) in the NTIRE variant.
    """

    def __init__(self, dim: int, factors: Sequence[int] = (1, 2, 4, 8), bias: bool = True) -> None:
        super().__init__()
        if dim % len(factors):
            raise ValueError(f"SAFM dim {dim} must be divisible by the {len(factors)} levels")
        self.factors = tuple(int(f) for f in factors)
        self.chunk = dim // len(factors)
        self.mfr = nn.ModuleList(
            nn.Conv2d(self.chunk, self.chunk, 3, padding=1, groups=self.chunk, bias=bias) for _ in self.factors)
        self.aggr = nn.Conv2d(dim, dim, 1, bias=bias)
        self.act = nn.GELU()
        self.upsample = "up"  # "_up{i}" depthwise kernels; "dense" after for_target("tflite")
        for i, f in enumerate(self.factors):  # kernels of the exact nearest upsample; not in the state_dict
            if f > 1:
                self.register_buffer(f"_up{i}", torch.ones(self.chunk, 1, f, f), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = []
        for i, (conv, f) in enumerate(zip(self.mfr, self.factors)):
            part = x[:, i * self.chunk:(i + 1) * self.chunk]
            up = getattr(self, f"_{self.upsample}{i}") if f > 1 else None
            levels.append(conv(part) if f == 1 else pool_modulate_up(part, conv, f, up))
        return self.act(self.aggr(torch.cat(levels, dim=1))) * x

    def for_target(self, target: str) -> bool:
        """The exact nearest upsample each runtime runs fastest: a depthwise transposed conv for XNNPACK
        (ExecuTorch), a dense one for LiteRT (same values)."""
        self.upsample = "dense" if target == "tflite" else "up"
        for i, f in enumerate(self.factors):
            if f > 1 and self.upsample == "dense" and not hasattr(self, f"_dense{i}"):
                up = getattr(self, f"_up{i}")
                eye = torch.eye(self.chunk, dtype=up.dtype, device=up.device)[:, :, None, None]
                self.register_buffer(f"_dense{i}", eye.repeat(1, 1, f, f).contiguous(), persistent=False)
        return self.upsample != "up"


class CCM(nn.Module):
    """Convolutional channel mixer: 3×3 conv C→hC, GELU, 1×1 conv hC→C (official ``ccm.ccm``)."""

    def __init__(self, dim: int, ffn_scale: float = 2.0, bias: bool = True) -> None:
        super().__init__()
        hidden = int(dim * ffn_scale)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1, bias=bias), nn.GELU(),
                                 nn.Conv2d(hidden, dim, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    """Feature mixing module: x + SAFM(norm1(x)), then + CCM(norm2(·)).

    The NTIRE variant has no norms (``layer_norm=False`` gives parameter-free identities, no keys).
    """

    def __init__(self, dim: int, ffn_scale: float = 2.0, layer_norm: bool = True,
                 factors: Sequence[int] = (1, 2, 4, 8), bias: bool = True) -> None:
        super().__init__()
        self.norm1 = ChannelsFirstLayerNorm(dim) if layer_norm else nn.Identity()
        self.norm2 = ChannelsFirstLayerNorm(dim) if layer_norm else nn.Identity()
        self.safm = SAFM(dim, factors, bias)
        self.ccm = CCM(dim, ffn_scale, bias)

    def norm_folds(self) -> list[tuple[str, list[nn.Module], bool]]:
        """``norm2`` feeds only the CCM's first conv, a 3×3 with zero padding: its scale folds, its shift
        must stay in front (``norm1`` also feeds the pooling pyramid, so it stays)."""
        return [("norm2", [self.ccm.ccm[0]], False)] if isinstance(self.norm2, ChannelNorm) else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(nn.Module):
    """to_feat 3×3 → n_blocks × AttBlock → + to_feat output → 3×3 conv + PixelShuffle.

    Input RGB in [0, 1], no mean shift; output not clamped (as the official model). H, W >= 8 (the
    coarsest pooling level has factor 8); H, W multiples of 8 take the exact max_pool2d fast path.
    """

    feature_node = "to_img"  # its input is the final body feature map (for feature distillation)

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_size = 8
        self.size_multiple = 8  # exact, fully delegated max-pool pyramid (factors up to 8)
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.feats = nn.Sequential(*[AttBlock(dim, ffn_scale) for _ in range(n_blocks)])
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * self.scale ** 2, 3, padding=1), nn.PixelShuffle(self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size, "SAFMN")
        f0 = self.to_feat(x)
        return self.to_img(self.feats(f0) + f0)


class SAFMNNTIRE(nn.Module):
    """NTIRE-2023 ESR entry (spec appendix A): GRN after to_feat, norm-free bias-free blocks with pooling
    factors 4/8/16, no feature skip, and a bilinear image skip instead.

    H, W >= 16; the GRN is a whole-image op, so tiled inference differs from whole-image inference.
    """

    feature_node = "to_img"

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_size = 16
        self.size_multiple = 16  # exact, fully delegated max-pool pyramid (factors up to 16)
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.norm = GRN(dim)
        self.feats = nn.Sequential(*[AttBlock(dim, ffn_scale, layer_norm=False, factors=(1, 4, 8, 16), bias=False)
                                     for _ in range(n_blocks)])
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * self.scale ** 2, 3, padding=1), nn.PixelShuffle(self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.min_size, "SAFMN_NTIRE")
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.to_img(self.feats(self.norm(self.to_feat(x)))) + base


@register_model
def safmn(scale: int = 4, **overrides: Any) -> SAFMN:
    """SAFMN: dim 36, 8 blocks (227,820 / 232,695 / 239,520 parameters at x2 / x3 / x4)."""
    return SAFMN(scale=scale, **{"dim": 36, "n_blocks": 8, "ffn_scale": 2.0, **overrides})


@register_model
def safmn_l(scale: int = 4, **overrides: Any) -> SAFMN:
    """SAFMN-L: dim 128, 16 blocks (5,559,308 / 5,576,603 / 5,600,816 parameters)."""
    return SAFMN(scale=scale, **{"dim": 128, "n_blocks": 16, "ffn_scale": 2.0, **overrides})


@register_model
def safmn_ntire(scale: int = 4, **overrides: Any) -> SAFMNNTIRE:
    """SAFMN NTIRE-2023 variant, x4 only (237,000 parameters = team15_SAFMN.pth)."""
    return SAFMNNTIRE(scale=scale, **{"dim": 36, "n_blocks": 8, "ffn_scale": 2.0, **overrides})


safmn_ntire.scales = (4,)  # type: ignore[attr-defined]  # read by edgesr.models.create
