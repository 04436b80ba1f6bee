"""The few pieces every architecture file shares (kept tiny on purpose)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_input(x: torch.Tensor, min_size: int, model: str) -> None:
    """Reject inputs a model cannot process with a message that names the limit.

    Comparisons stay on (possibly symbolic) sizes so that ``torch.export`` records a guard
    instead of specialising the graph.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{model} expects an N×3×H×W RGB tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}×{min_size} pixels, "
            f"got {x.shape[-2]}×{x.shape[-1]}"
        )


# ------------------------------------------------------------------------------- channel norm
def channel_mean(x: torch.Tensor, avg: torch.Tensor | None = None) -> torch.Tensor:
    """``x.mean(dim=1, keepdim=True)``; under ``torch.export`` a 1×1 conv with a constant 1/C kernel.

    XNNPACK leaves ``mean(dim=1)`` on portable kernels but delegates the conv; in eager PyTorch the conv
    is slower than the mean, so each form is used where it is the fast one. ``avg`` is the (1, C, 1, 1)
    kernel buffer of the caller (a kernel built inside ``forward`` would be a graph op, not a constant).
    """
    if avg is not None and torch.compiler.is_exporting():
        return F.conv2d(x, avg.to(x.dtype))
    return x.mean(dim=1, keepdim=True)


def spatial_mean(x: torch.Tensor, two_pass: bool = True) -> torch.Tensor:
    """Mean over H·W; exported float graphs take it as an average pool over W, then over H.

    XNNPACK's fp32 mean reduces H·W in one pass: at 180×320 its relative error is 7e-6 against 2e-7 in two
    pools (PyTorch: 2e-7), and EIMN-A gates every block with a whole-image mean of activations reaching ~650
    (its .pte/.tflite max |diff| from PyTorch: 1.5e-4 with one pass, 4e-6 with two). Pools, not
    ``mean(dim=3)``: XNNPACK delegates a mean only over both spatial dims. Static sizes only (float exports
    are fixed-size). int8 graphs keep one pass (``two_pass=False``): the int8 mean accumulates exactly in
    int32, a second pass would only add a requantization.
    """
    if two_pass and torch.compiler.is_exporting():
        return F.avg_pool2d(F.avg_pool2d(x, (1, x.shape[3])), (x.shape[2], 1))
    return x.mean(dim=(2, 3), keepdim=True)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, written without layout permutes (exporters turn
    those into real transposes); ``weight``/``bias`` are shaped [C] like ``nn.LayerNorm(C)``'s, and either
    may be absent (what is left of a norm after ``edgesr.reparam.fold_norms``).

    Eager PyTorch computes ``(x - mean) / sqrt(var + eps)`` as the official channels-first LayerNorms do.
    Under ``torch.export`` (or with ``conv_mean``) it is ``d * rsqrt(mean(d²) + eps)`` with the channel
    means as 1×1 convs, the form every delegate runs. ``prescale`` (a power of two, set by the fp16 export,
    see ``edgesr.reparam.fp16_safe_norms``) scales ``d`` before squaring so fp16 does not overflow; it is
    exact in fp32.
    """

    def __init__(self, dim: int, eps: float = 1e-6, weight: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.eps = int(dim), float(eps)
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.register_buffer("avg", torch.full((1, dim, 1, 1), 1.0 / dim), persistent=False)
        self.prescale = 1.0
        self.conv_mean = False

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_mean or torch.compiler.is_exporting():
            avg = self.avg.to(x.dtype)
            d = x - F.conv2d(x, avg)
            eps = self.eps
            if self.prescale != 1.0:
                d, eps = d * self.prescale, eps * self.prescale ** 2
            return d * torch.rsqrt(F.conv2d(d * d, avg) + eps)
        d = x - x.mean(dim=1, keepdim=True)
        if self.prescale != 1.0:
            d = d * self.prescale
            return d / torch.sqrt(d.pow(2).mean(dim=1, keepdim=True) + self.eps * self.prescale ** 2)
        return d / torch.sqrt(d.pow(2).mean(dim=1, keepdim=True) + self.eps)  # biased variance

    def affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(scale, shift) per channel, shape [C] (None where absent): what norm folding reads."""
        return self.weight, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x)
        if self.weight is not None:
            y = y * self.weight[:, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, weight={self.weight is not None}, bias={self.bias is not None}"
