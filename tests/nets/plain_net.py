"""A plain conv network built by a factory function with keyword arguments (not in edgesr's registry)."""

import torch.nn as nn


def make_plain_sr(scale=2, channels=12, depth=3, bias=True):
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=bias), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=bias), nn.ReLU()]
    layers += [nn.Conv2d(channels, 3 * scale * scale, 3, padding=1, bias=bias), nn.PixelShuffle(scale)]
    return nn.Sequential(*layers)


def outlier_upsampler(scale=2):
    """x2 nearest upsampling as conv -> ReLU -> conv -> ReLU -> conv -> PixelShuffle (~25 dB on photos) whose first
    activation carries one channel 1000x the others that nothing reads: the fp32 function ignores it, a per-tensor
    int8 activation scale sized for it rounds the image channels to a few levels."""
    import torch

    model = make_plain_sr(scale, channels=8, depth=2)
    with torch.no_grad():
        for conv in (model[0], model[2], model[4]):
            conv.weight.zero_()
            conv.bias.zero_()
        model[0].bias[0] = 1000.0                      # the outlier channel
        for c in range(3):
            model[0].weight[3 + c, c, 1, 1] = 1.0      # channels 3..5 carry the image
            model[2].weight[3 + c, 3 + c, 1, 1] = 1.0
            model[4].weight[scale * scale * c:scale * scale * (c + 1), 3 + c, 1, 1] = 1.0  # colour -> sub-pixels
    return model


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


class NormOfADeadChannel(nn.Module):
    """conv -> sqrt(Σx²) norm (as SAFMN NTIRE's GRN) -> conv -> PixelShuffle, whose first conv has one channel
    that is exactly zero: the norm's gradient there is inf·0 = NaN on every step."""

    def __init__(self, scale=2, channels=4):
        super().__init__()
        import torch

        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)
        with torch.no_grad():
            self.head.weight[0].zero_()
            self.head.bias[0] = 0.0

    def forward(self, x):
        import torch

        y = self.head(x)
        g = torch.sqrt((y * y).sum(dim=(2, 3), keepdim=True))
        y = y * (1 + 0.1 * g / (g.mean(dim=1, keepdim=True) + 1e-6))
        return self.up(self.tail(y))


class LongSkip(nn.Module):
    """conv -> (conv -> ReLU -> conv, x - conv(x)) + skip -> conv -> PixelShuffle: the first conv's output is read
    by an int8 conv and by float ops (with ``float_adds``), as LAMNet's features are."""

    def __init__(self, scale=2, channels=8):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.local = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        f = self.head(x)
        detail = f - self.local(f)
        y = self.b(self.a(detail).relu()) + f
        return self.up(self.tail(y))
