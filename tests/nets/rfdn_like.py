"""An RFDN/IMDN-style network as third-party code writes it (edgesr's registry does not know it):
in-place LeakyReLU, an ESA attention branch with max_pool2d(kernel_size=7, stride=3) and bilinear
interpolation back to the input's size, a pixel-shuffle tail, and inputs in 0-255."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ESA(nn.Module):
    def __init__(self, n_feats, f=8):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        c3 = self.relu(self.conv3(v_max))
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        cf = self.conv_f(c1_)
        c4 = self.conv4(c3 + cf)
        return x * torch.sigmoid(c4)


class RFDB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.d = nn.Conv2d(c, c // 2, 1)
        self.r = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.fuse = nn.Conv2d(c + c // 2, c, 1)
        self.esa = ESA(c)

    def forward(self, x):
        d = self.act(self.d(x))
        r = self.act(self.r(x) + x)
        return self.esa(self.fuse(torch.cat([d, r], dim=1)))


class RFDNLike(nn.Module):
    def __init__(self, upscale=4, n_feats=16, n_blocks=2):
        super().__init__()
        self.rgb_mean = (0.4488 * 255, 0.4371 * 255, 0.4040 * 255)
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.ModuleList([RFDB(n_feats) for _ in range(n_blocks)])
        self.c = nn.Conv2d(n_feats * n_blocks, n_feats, 1)
        self.tail = nn.Sequential(nn.Conv2d(n_feats, 3 * upscale * upscale, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x):
        mean = torch.tensor(self.rgb_mean, device=x.device).view(1, 3, 1, 1)
        x = x - mean
        f = self.head(x)
        outs = []
        h = f
        for blk in self.body:
            h = blk(h)
            outs.append(h)
        h = F.leaky_relu(self.c(torch.cat(outs, dim=1)), 0.05, inplace=True) + f
        return self.tail(h) + mean
