"""A plain conv network built by a factory function with keyword arguments (not in edgesr's registry)."""

import torch.nn as nn


def make_plain_sr(scale=2, channels=12, depth=3, bias=True):
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=bias), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=bias), nn.ReLU()]
    layers += [nn.Conv2d(channels, 3 * scale * scale, 3, padding=1, bias=bias), nn.PixelShuffle(scale)]
    return nn.Sequential(*layers)


class ItemNet(nn.Module):
    """Reads a tensor's value in Python: torch.export cannot trace it (an export hazard test case)."""

    def __init__(self, scale=2):
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        if x.mean().item() > 2.0:
            x = x / 255.0
        return self.up(self.conv(x))
