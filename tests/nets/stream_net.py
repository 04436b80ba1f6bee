"""A residual stream with one channel 100x the others (what EIMN-A's late stages grow), for outlier migration."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgesr.models.layers import ChannelNorm


class Stream(nn.Module):
    """head conv → 2 layer-scaled residual blocks (1×1 → GELU → 1×1) → channel LayerNorm → tail → shuffle."""

    def __init__(self, c=16, scale=2):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.inner = nn.ModuleList(nn.Conv2d(c, 2 * c, 1) for _ in range(2))
        self.outer = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for _ in range(2))
        self.layer_scale = nn.Parameter(torch.full((2, c), 0.5))
        self.norm = ChannelNorm(c)
        self.tail = nn.Conv2d(c, 3 * scale * scale, 3, padding=1)

    def forward(self, x):
        y = self.head(x)
        for i in range(2):
            y = y + self.layer_scale[i][:, None, None] * self.outer[i](F.gelu(self.inner[i](y)))
        return F.pixel_shuffle(self.tail(self.norm(y)), self.scale)


def make_stream(scale=2, outlier=5, factor=100.0, seed=0):
    """Stream channel ``outlier`` ``factor`` x larger, the convs reading it compensated (as a BatchNorm fold leaves
    EIMN's): the same kind of function, but one per-tensor int8 scale rounds the other channels away."""
    torch.manual_seed(seed)
    m = Stream(scale=scale).eval()
    with torch.no_grad():
        m.head.weight[outlier] *= factor
        m.head.bias[outlier] *= factor
        m.layer_scale[:, outlier] *= factor
        for conv in m.inner:
            conv.weight[:, outlier] /= factor
    return m
