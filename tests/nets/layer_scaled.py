"""A net whose residual branches are scaled per channel the way research code writes it: ``gamma[:, None, None]``
(a 3-D operand of a 4-D multiply)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerScaled(nn.Module):
    def __init__(self, scale: int = 2, channels: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(blocks))
        self.gammas = nn.ParameterList(nn.Parameter(torch.rand(channels) + 0.5) for _ in range(blocks))
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        for conv, g in zip(self.convs, self.gammas):
            y = y + g[:, None, None] * conv(y)
        return F.pixel_shuffle(self.tail(y), self.scale)


def make_layer_scaled(scale: int = 2) -> LayerScaled:
    torch.manual_seed(0)
    return LayerScaled(scale)
