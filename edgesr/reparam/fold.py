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

Which consumer reads which norm is a fact of each architecture, and lives in its file: a block's
``norm_folds()`` lists (norm attribute, the convs that read it, whether the shift folds too). E.g. EIMN
BN1 → ``attn.proj_value.0`` and ``attn.proj_query.0``; SAFMN ``norm2`` → ``ccm.0`` (3×3: scale only). Norms
whose output also feeds a residual, a gate or a pooling (EIMN stage norms, SAFMN ``norm1``) are not listed.
The structure after folding depends only on the architecture, never on weight values, so a folded
checkpoint reloads into ``fold_norms(fresh model)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.layers import ChannelNorm

__all__ = ["ChannelNorm", "fold_norms", "fold_affine_into_conv", "batchnorm_affine"]


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
    """(scale, shift) of a norm's affine part, float64, shape [C] (ones / zeros where a part is absent)."""
    if isinstance(norm, nn.BatchNorm2d):
        return batchnorm_affine(norm)
    scale, shift = norm.affine()
    c = norm.dim
    s = scale.detach().double().flatten() if scale is not None else torch.ones(c, dtype=torch.float64)
    t = shift.detach().double().flatten() if shift is not None else torch.zeros(c, dtype=torch.float64)
    return s, t


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, nn.BatchNorm2d) or (isinstance(norm, ChannelNorm) and any(
        p is not None for p in norm.affine()))


def _plain(norm: nn.Module, *, bias: bool = False) -> nn.Module:
    """What is left of ``norm`` once its affine part is folded: nothing for a BatchNorm, the bare
    normalisation for a LayerNorm."""
    if isinstance(norm, nn.BatchNorm2d):
        return nn.Identity()
    p = next(norm.parameters())
    return ChannelNorm(norm.dim, norm.eps, weight=False, bias=bias).to(device=p.device, dtype=p.dtype)


@torch.no_grad()
def fold_norms(model: nn.Module, batchnorm_only: bool = False) -> nn.Module:
    """Fold every norm a block lists in ``norm_folds()`` into its consumers, in place; returns ``model`` in
    eval mode. ``batchnorm_only``: fold BatchNorms alone (the export form, which keeps LayerNorms).

    BatchNorm folds with its running statistics, i.e. eval-mode semantics. Consumers that are still
    expanded multi-branch blocks are skipped (``deploy`` collapses first).
    """
    model.eval()
    for block in list(model.modules()):
        if not hasattr(block, "norm_folds"):
            continue
        for attr, convs, shift_ok in block.norm_folds():
            norm = getattr(block, attr)
            if not _foldable(norm) or (batchnorm_only and not isinstance(norm, nn.BatchNorm2d)):
                continue
            if any(type(c) is not nn.Conv2d or c.groups != 1 for c in convs):
                continue  # e.g. still expanded: collapse first
            s, t = _affine(norm)
            if shift_ok and all(_unpadded(c) for c in convs):
                for conv in convs:
                    fold_affine_into_conv(conv, s, t)
                setattr(block, attr, _plain(norm))
            elif not isinstance(norm, nn.BatchNorm2d):  # padded consumer: n·s + t = s·(n + t/s)
                s = _nonzero(s)
                for conv in convs:
                    fold_affine_into_conv(conv, s, None)
                plain = _plain(norm, bias=True)
                plain.bias.copy_((t / s).to(plain.bias.dtype))
                setattr(block, attr, plain)
    return model


def _nonzero(s: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """``s`` with |s| floored at ``tiny`` (a zero scale cannot carry the shift; the change is ≤ tiny·|W·n|)."""
    return torch.where(s.abs() < tiny, torch.where(s < 0, -tiny, tiny).to(s.dtype), s)
