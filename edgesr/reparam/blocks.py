"""Multi-branch training blocks that collapse into one ``nn.Conv2d``.

Every block is built from a trained (or freshly initialised) conv and starts as *the same function*:
the original kernel sits in the main branch and every extra branch starts at zero — its last linear
factor is zero, so gradients still reach it on the first step. Where the block has an identity branch
(in == out channels), the main branch holds ``W - I`` so that main + identity is still ``W``.

No branch has BatchNorm: BN hurts SR networks (EDSR) and its batch statistics would make the training
function differ from the deployed one. Without BN a bare identity branch cannot change the training
dynamics (it only offsets the parameterisation); it is kept because collapse must honour RepVGG's form.

Border exactness: a 1×1 → k×k sequence applies the 1×1 to the *zero-padded* input (so the border of its
output is its bias, as in ECBSR) and the k×k with no padding; a k×k → 1×1 sequence needs nothing.
Both then equal one k×k conv with zero padding, bit for bit up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RepConv", "RepVGGConv", "ECBConv", "SESRConv", "EdgeBranch", "EDGE_MASKS", "Kernel"]

Kernel = tuple[torch.Tensor, torch.Tensor | None]   # (weight [out, in, k, k], bias [out] or None), float64

EDGE_MASKS = {  # ECBSR's fixed edge filters (first and second order derivatives)
    "sobel_x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobel_y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


def _conv_like(conv: nn.Conv2d, cin: int, cout: int, k: int, padding: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=padding, bias=bias, device=conv.weight.device, dtype=conv.weight.dtype)


def _identity_kernel(channels: int, k: int, like: torch.Tensor) -> torch.Tensor:
    w = torch.zeros(channels, channels, k, k, dtype=like.dtype, device=like.device)
    w[torch.arange(channels), torch.arange(channels), k // 2, k // 2] = 1.0
    return w


def _pad_kernel(w: torch.Tensor, k: int) -> torch.Tensor:
    """Centre a smaller odd kernel inside a k×k one (exact: the extra taps are zero)."""
    p = (k - w.shape[-1]) // 2
    return F.pad(w, (p, p, p, p))


def _add(a: Kernel, b: Kernel) -> Kernel:
    bias = a[1] if b[1] is None else (b[1] if a[1] is None else a[1] + b[1])
    return a[0] + b[0], bias


def _kernel(conv: nn.Conv2d) -> Kernel:
    return conv.weight.detach().double(), None if conv.bias is None else conv.bias.detach().double()


class RepConv(nn.Module):
    """A k×k conv (stride 1, groups 1, zero 'same' padding) written as a sum of branches.

    ``kernel()`` returns the single equivalent (weight, bias) in float64; ``to_conv()`` builds that conv.
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    has_bias: bool
    identity: bool

    def _setup(self, conv: nn.Conv2d) -> None:
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size[0]
        self.has_bias = conv.bias is not None
        self.identity = conv.in_channels == conv.out_channels

    def kernel(self) -> Kernel:
        raise NotImplementedError

    def _with_identity(self, k: Kernel) -> Kernel:
        if not self.identity:
            return k
        return k[0] + _identity_kernel(self.out_channels, self.kernel_size, k[0]), k[1]

    @torch.no_grad()
    def to_conv(self) -> nn.Conv2d:
        w, b = self.kernel()
        ref = next(self.parameters())
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=self.kernel_size // 2,
                         bias=self.has_bias, device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(w.to(ref.dtype))
        if b is not None:
            conv.bias.copy_(b.to(ref.dtype))
        return conv.train(self.training)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.has_bias}, identity={self.identity}")


class RepVGGConv(RepConv):
    """RepVGG without BN: k×k + 1×1 (when k > 1) + identity (when in == out)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self._setup(conv)
        k, bias = self.kernel_size, self.has_bias
        self.conv = _conv_like(conv, self.in_channels, self.out_channels, k, k // 2, bias)
        self.conv1x1 = _conv_like(conv, self.in_channels, self.out_channels, 1, 0, bias) if k > 1 else None
        with torch.no_grad():
            w = conv.weight.detach()
            self.conv.weight.copy_(w - _identity_kernel(self.out_channels, k, w) if self.identity else w)
            if bias:
                self.conv.bias.copy_(conv.bias.detach())
            if self.conv1x1 is not None:
                nn.init.zeros_(self.conv1x1.weight)
                if bias:
                    nn.init.zeros_(self.conv1x1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.conv1x1 is not None:
            y = y + self.conv1x1(x)
        return y + x if self.identity else y

    def kernel(self) -> Kernel:
        k = _kernel(self.conv)
        if self.conv1x1 is not None:
            w1, b1 = _kernel(self.conv1x1)
            k = _add(k, (_pad_kernel(w1, self.kernel_size), b1))
        return self._with_identity(k)


class EdgeBranch(nn.Module):
    """ECBSR's 1×1 conv followed by a fixed edge mask with a learned per-channel scale and bias.

    The 1×1 runs on the zero-padded input and the mask with no padding (exactly one 3×3 conv).
    """

    def __init__(self, conv: nn.Conv2d, mask: str) -> None:
        super().__init__()
        cin, cout, bias = conv.in_channels, conv.out_channels, conv.bias is not None
        self.conv1x1 = _conv_like(conv, cin, cout, 1, 0, bias)
        self.scale = nn.Parameter(torch.zeros(cout, 1, 1, 1, device=conv.weight.device, dtype=conv.weight.dtype))
        self.bias = (nn.Parameter(torch.zeros(cout, device=conv.weight.device, dtype=conv.weight.dtype))
                     if bias else None)
        self.register_buffer("mask", torch.tensor(EDGE_MASKS[mask], dtype=conv.weight.dtype,
                                                  device=conv.weight.device).expand(cout, 1, 3, 3).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(F.pad(x, (1, 1, 1, 1)))
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=y.shape[1])

    def kernel(self) -> Kernel:
        w0, b0 = _kernel(self.conv1x1)
        m = self.scale.detach().double() * self.mask.double()               # [out, 1, 3, 3]
        w = m * w0                                                           # [out, in, 3, 3]
        if b0 is None:
            return w, None
        return w, self.bias.detach().double() + m.sum(dim=(1, 2, 3)) * b0


class ECBConv(RepConv):
    """ECBSR's edge-oriented block for a 3×3 conv: 3×3 + (1×1 → 3×3) + Sobel-x + Sobel-y + Laplacian,
    plus identity when in == out. ``depth_multiplier`` sizes the 1×1 → 3×3 branch (ECBSR: 2)."""

    def __init__(self, conv: nn.Conv2d, depth_multiplier: float = 2.0) -> None:
        super().__init__()
        self._setup(conv)
        if self.kernel_size != 3:
            raise ValueError(f"ECB blocks replace 3×3 convs, got {self.kernel_size}×{self.kernel_size}")
        cin, cout, bias = self.in_channels, self.out_channels, self.has_bias
        mid = max(1, int(cout * depth_multiplier))
        self.conv = _conv_like(conv, cin, cout, 3, 1, bias)
        self.expand = _conv_like(conv, cin, mid, 1, 0, bias)
        self.squeeze = _conv_like(conv, mid, cout, 3, 0, bias)
        self.edges = nn.ModuleDict({name: EdgeBranch(conv, name) for name in EDGE_MASKS})
        with torch.no_grad():
            w = conv.weight.detach()
            self.conv.weight.copy_(w - _identity_kernel(cout, 3, w) if self.identity else w)
            if bias:
                self.conv.bias.copy_(conv.bias.detach())
                nn.init.zeros_(self.squeeze.bias)
            nn.init.zeros_(self.squeeze.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + self.squeeze(self.expand(F.pad(x, (1, 1, 1, 1))))
        for edge in self.edges.values():
            y = y + edge(x)
        return y + x if self.identity else y

    def kernel(self) -> Kernel:
        k = _kernel(self.conv)
        w0, b0 = _kernel(self.expand)
        w1, b1 = _kernel(self.squeeze)
        seq_w = torch.einsum("omhw,mi->oihw", w1, w0[:, :, 0, 0])
        seq_b = None if b1 is None else b1 + torch.einsum("omhw,m->o", w1, b0)
        k = _add(k, (seq_w, seq_b))
        for edge in self.edges.values():
            k = _add(k, edge.kernel())
        return self._with_identity(k)


class SESRConv(RepConv):
    """SESR's collapsible linear block: k×k conv to ``expansion`` channels, 1×1 back, + identity
    (when in == out). Function-preserving init needs ``expansion >= out_channels``: the first
    ``out_channels`` hidden channels carry the original kernel, the 1×1 starts as [I | 0]."""

    def __init__(self, conv: nn.Conv2d, expansion: int = 256) -> None:
        super().__init__()
        self._setup(conv)
        if expansion < self.out_channels:
            raise ValueError(f"SESR expansion {expansion} is smaller than the conv's {self.out_channels} output "
                             "channels (the block could not start as the original conv)")
        k, cout, bias = self.kernel_size, self.out_channels, self.has_bias
        self.expand = _conv_like(conv, self.in_channels, expansion, k, k // 2, bias)
        self.squeeze = _conv_like(conv, expansion, cout, 1, 0, bias)
        with torch.no_grad():
            w = conv.weight.detach()
            self.expand.weight[:cout].copy_(w - _identity_kernel(cout, k, w) if self.identity else w)
            if bias:
                self.expand.bias.zero_()
                self.expand.bias[:cout].copy_(conv.bias.detach())
                self.squeeze.bias.zero_()
            self.squeeze.weight.zero_()
            self.squeeze.weight[torch.arange(cout), torch.arange(cout), 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.squeeze(self.expand(x))
        return y + x if self.identity else y

    def kernel(self) -> Kernel:
        w0, b0 = _kernel(self.expand)
        w1, b1 = _kernel(self.squeeze)
        w = torch.einsum("oe,eihw->oihw", w1[:, :, 0, 0], w0)
        b = None if b1 is None else b1 + w1[:, :, 0, 0] @ b0
        return self._with_identity((w, b))
