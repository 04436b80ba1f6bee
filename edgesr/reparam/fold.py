"""Fold affine normalisations into the linear op that consumes them — only where that is exact.

A norm's affine part ``y = n·s + t`` (per channel) feeding a conv ``W``:

* the scale always folds: ``W(n·s) = (W·diag(s)) n`` — zero padding of ``n·s`` is ``s`` times zero padding
  of ``n``, so this holds for any kernel size;
* the shift folds into the bias only when the conv has no padding (1×1): a k×k conv with zero padding sees
  ``t`` inside the image but 0 outside, so ``W t`` differs at the borders (SAFMN's ``norm2 → ccm.0``).
  There the shift must stay in front of the conv, and folding the scale alone means rewriting
  ``n·s + t = s·(n + t/s)``: the norm keeps the bias ``t/s`` and the conv takes ``W·diag(s)``. In float32
  the rounding of ``n + t/s`` is ``≈ ε|t/s|``, which the conv multiplies by ``|W s|``: ``ε|t||W|``, the same
  order as the original ``n·s + t`` — so this is exact up to rounding for any nonzero s (a zero s is floored
  at 1e-12, a change below 1e-12·|W·n|).

Which consumer reads which norm is a fact of each architecture, listed here per family (no graph
tracing): EIMN BN1 → ``attn.proj_value.0`` and ``attn.proj_query.0``, BN2 → ``mlp.linear_in``, DFFM's
LayerNorm → ``global_reduce`` and ``local_reduce`` (the spatial mean between is linear); LAMNet's
pre-norms → ``proj_in`` / ``project_in``; SAFMN ``norm2`` scale → ``ccm.0``. Norms whose output also feeds
a residual, a gate or a pooling (EIMN stage norms, SAFMN ``norm1``) stay. The structure after folding
depends only on the architecture, never on weight values, so a folded checkpoint reloads into
``fold_norms(fresh model)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import eimn, lamnet, safmn

__all__ = ["ChannelNorm", "fold_norms", "fold_affine_into_conv", "batchnorm_affine"]


class ChannelNorm(nn.Module):
    """Channels-first LayerNorm whose affine parts are optional: what is left of a norm after folding.

    ``d * rsqrt(mean(d²) + eps)``. Eager PyTorch takes ``mean(dim=1)``; under ``torch.export`` (or with
    ``conv_mean``, set by the rewrite ``layer_norm_conv_mean``) the channel means are 1×1 convs with a constant
    1/C kernel, because XNNPACK leaves ``mean(dim=1)`` on portable kernels — while in eager PyTorch that conv made
    SAFMN's deploy form 13 % slower than its eval form (``benchmarks/reparam.py``). Equal to the models' norms up
    to float rounding.
    """

    def __init__(self, dim: int, eps: float, weight: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.dim, self.eps = dim, float(eps)
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.register_buffer("avg", torch.full((1, dim, 1, 1), 1.0 / dim), persistent=False)
        self.prescale = 1.0  # fp16 export: see edgesr.export.rewrites.fp16_safe_norms
        self.conv_mean = False  # export: see the class docstring

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_mean or torch.compiler.is_exporting():
            return F.conv2d(x, self.avg)
        return x.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self._mean(x)
        eps = self.eps
        if self.prescale != 1.0:
            d, eps = d * self.prescale, eps * self.prescale ** 2
        y = d * torch.rsqrt(self._mean(d * d) + eps)
        if self.weight is not None:
            y = y * self.weight[:, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, weight={self.weight is not None}, bias={self.bias is not None}"


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as per-channel (scale, shift) in float64: s = γ/√(var+ε), t = β − mean·s."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    s = 1.0 / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.detach().double()
    t = -bn.running_mean.detach().double() * s
    if bn.bias is not None:
        t = t + bn.bias.detach().double()
    return s, t


@torch.no_grad()
def fold_affine_into_conv(conv: nn.Conv2d, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
    """Make ``conv(x)`` compute what ``conv(x·scale + shift)`` did (scale/shift per input channel).

    ``shift`` is only allowed for convs without padding, where folding it is exact.
    """
    if conv.groups != 1:
        raise ValueError("folding into grouped convs is not supported")
    w = conv.weight.detach().double()
    if shift is not None:
        if not _unpadded(conv):
            raise ValueError("a shift folds exactly only into convs without padding")
        extra = (w * shift.double()[None, :, None, None]).sum(dim=(1, 2, 3))
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                                 device=conv.weight.device))
        conv.bias.copy_((conv.bias.detach().double() + extra).to(conv.bias.dtype))
    if scale is not None:
        conv.weight.copy_((w * scale.double()[None, :, None, None]).to(conv.weight.dtype))


def _unpadded(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding == "valid" or all(k == 1 for k in conv.kernel_size)
    return all(p == 0 for p in conv.padding)


def _affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of the affine part of one of the models' channel norms, float64, shape [C]."""
    if isinstance(norm, nn.BatchNorm2d):
        return batchnorm_affine(norm)
    if isinstance(norm, lamnet.LayerNormUnchanged):
        return norm.alpha.detach().double().flatten(), norm.beta.detach().double().flatten()
    return norm.weight.detach().double(), norm.bias.detach().double()


def _fold_into(norm: nn.Module, convs: list[nn.Module]) -> bool:
    """Fold the whole affine part of ``norm`` into every one of ``convs`` (all 1×1, no padding)."""
    if not all(type(c) is nn.Conv2d and c.kernel_size == (1, 1) and c.groups == 1 for c in convs):
        return False  # e.g. still expanded: collapse first
    s, t = _affine(norm)
    for conv in convs:
        fold_affine_into_conv(conv, s, t)
    return True


def _plain(norm: nn.Module, *, bias: bool = False) -> ChannelNorm:
    p = next(norm.parameters())
    return ChannelNorm(p.numel(), norm.eps, bias=bias).to(device=p.device, dtype=p.dtype)


@torch.no_grad()
def fold_norms(model: nn.Module) -> nn.Module:
    """Fold every foldable norm (see the module docstring) in place; returns ``model`` in eval mode.

    BatchNorm folds with its running statistics, i.e. eval-mode semantics. Convs that are still expanded
    multi-branch blocks are skipped (``deploy`` collapses first).
    """
    model.eval()
    for m in list(model.modules()):
        if isinstance(m, eimn.EIMNBlock):
            if isinstance(m.norm1, nn.BatchNorm2d) and _fold_into(m.norm1, [m.attn.proj_value[0],
                                                                            m.attn.proj_query[0]]):
                m.norm1 = nn.Identity()
            if isinstance(m.norm2, nn.BatchNorm2d) and _fold_into(m.norm2, [m.mlp.linear_in]):
                m.norm2 = nn.Identity()
        elif isinstance(m, eimn.DFFM) and isinstance(m.norm, eimn.ChannelsFirstLayerNorm):
            # n is read by local_reduce and, through the (linear) spatial mean, by global_reduce.
            if _fold_into(m.norm, [m.global_reduce, m.local_reduce]):
                m.norm = _plain(m.norm)
        elif isinstance(m, lamnet.PreNormResidual) and isinstance(m.norm, lamnet.LayerNormUnchanged):
            first = m.fn.proj_in if isinstance(m.fn, lamnet.LSAMixer) else getattr(m.fn, "project_in", None)
            if first is not None and _fold_into(m.norm, [first]):
                m.norm = _plain(m.norm)
        elif isinstance(m, safmn.AttBlock) and isinstance(m.norm2, safmn.ChannelsFirstLayerNorm):
            conv = m.ccm.ccm[0]
            if type(conv) is nn.Conv2d and conv.groups == 1:  # 3×3 with zero padding: the scale only
                s, t = _affine(m.norm2)
                s = _nonzero(s)
                fold_affine_into_conv(conv, s, None)
                m.norm2 = _plain(m.norm2, bias=True)
                m.norm2.bias.copy_((t / s).to(m.norm2.bias.dtype))
    return model


def _nonzero(s: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """``s`` with |s| floored at ``tiny`` (a zero scale cannot carry the shift; the change is ≤ tiny·|W·n|)."""
    return torch.where(s.abs() < tiny, torch.where(s < 0, -tiny, tiny).to(s.dtype), s)
