"""Pixel losses used by SR training recipes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAFMN's frequency loss: L1 between the stacked real/imag parts of ``rfft2`` of both images."""
    p = torch.fft.rfft2(pred.float())
    t = torch.fft.rfft2(target.float())
    return F.l1_loss(torch.stack([p.real, p.imag], -1), torch.stack([t.real, t.imag], -1))
