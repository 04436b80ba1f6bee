"""SCNet's Shift8 as convolutions: a fixed one-hot depthwise 3×3, or fused with the 1×1 conv after it.

Shift8 moves channel group j by one pixel in direction ``SHIFT8_OFFSETS[j]`` with zero fill:
``shift(z)[c, p] = z[c, p + d_c]``. Hence

* ``shift`` is a depthwise 3×3 conv (padding 1) whose kernel of channel c is 1 at tap ``(1 + dy, 1 + dx)``;
* ``conv1x1(shift(z))`` is one dense 3×3 conv (padding 1) with ``W3[o, c, 1 + dy_c, 1 + dx_c] = W[o, c]``.

In SCNet an activation sits between the shift and the 1×1 conv (``conv2(relu(shift(·)))``,
``LeakyReLU → Shift8 → conv``). A pointwise f with f(0) = 0 commutes with a zero-fill shift, so the fused
conv is exact in both places: the shift is replaced by ``Identity`` and the conv by the dense 3×3.

Which form is faster depends on the target: the dense 3×3 costs 9× the MACs of the 1×1 it replaces
(it removes only the pad + 8 slices + concat), the depthwise form swaps copies for a cheap conv.
``benchmarks/reparam.py`` measures all three on the host; see ``DEFAULT_SHIFT`` in ``edgesr.reparam``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..models.scnet import SHIFT8_OFFSETS, ResidualBlockShift, Shift8, shift8

__all__ = ["ShiftMode", "ShiftDepthwise", "shift_kernel", "shift_as_depthwise", "fuse_shift_conv", "shift_to_conv"]

ShiftMode = Literal["slice", "depthwise", "dense"]


def _offsets(shift: Shift8) -> list[tuple[int, int]]:
    """(dy, dx) of every channel."""
    return [d for d in SHIFT8_OFFSETS for _ in range(shift.groups)]


def shift_kernel(shift: Shift8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot depthwise kernels [8·groups, 1, 3, 3] of ``shift``."""
    c = 8 * shift.groups
    k = torch.zeros(c, 1, 3, 3, dtype=dtype)
    for ch, (dy, dx) in enumerate(_offsets(shift)):
        k[ch, 0, 1 + dy, 1 + dx] = 1.0
    return k


class ShiftDepthwise(nn.Conv2d):
    """Shift8 as a frozen one-hot depthwise 3×3 conv — the form delegates run as one op.

    Under ``torch.export`` (every edgesr exporter) it is that conv; in eager PyTorch it computes the same
    values with pad + slices, which is faster there (SCNet-T x4 eager: the conv made deploy 11 % slower
    than eval, ``benchmarks/reparam.py``). Both are exact: each output is one input times 1.0.
    """

    def __init__(self, groups: int, **kw: object) -> None:
        c = 8 * int(groups)
        super().__init__(c, c, 3, padding=1, groups=c, bias=False, **kw)  # type: ignore[arg-type]
        self.shift_groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return super().forward(x)
        return shift8(x, self.shift_groups)


def shift_as_depthwise(shift: Shift8, like: torch.Tensor | None = None) -> nn.Conv2d:
    """A frozen depthwise 3×3 conv equal to ``shift`` (exact: each output reads one input times 1.0)."""
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    conv = ShiftDepthwise(shift.groups, **kw)
    with torch.no_grad():
        conv.weight.copy_(shift_kernel(shift, conv.weight.dtype))
    return conv.requires_grad_(False)


@torch.no_grad()
def fuse_shift_conv(shift: Shift8, conv: nn.Conv2d) -> nn.Conv2d:
    """The dense 3×3 conv equal to ``conv(shift(·))`` for a 1×1, groups-1 ``conv``."""
    if type(conv) is not nn.Conv2d or conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
        raise ValueError("only a plain 1×1 conv can absorb a shift")
    if conv.in_channels != 8 * shift.groups:
        raise ValueError(f"shift has {8 * shift.groups} channels, conv reads {conv.in_channels}")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.zero_()
    for ch, (dy, dx) in enumerate(_offsets(shift)):
        fused.weight[:, ch, 1 + dy, 1 + dx] = conv.weight[:, ch, 0, 0]
    if conv.bias is not None:
        fused.bias.copy_(conv.bias)
    return fused.train(conv.training)


def _fusable(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.groups == 1


def shift_to_conv(model: nn.Module, mode: ShiftMode = "depthwise") -> nn.Module:
    """Rewrite every Shift8 of ``model`` in place as ``mode``; returns ``model``.

    ``"depthwise"``: each Shift8 becomes the frozen one-hot depthwise conv. ``"dense"``: each Shift8 with a
    1×1 conv after it (through a zero-preserving activation, as in SCNet) is fused into that conv; any other
    Shift8 becomes depthwise. ``"slice"``: unchanged (pad + slices + concat).
    """
    if mode not in ("slice", "depthwise", "dense"):
        raise ValueError(f"unknown shift mode {mode!r} (slice, depthwise, dense)")
    if mode == "slice":
        return model
    if mode == "dense":
        for m in list(model.modules()):
            if isinstance(m, ResidualBlockShift) and isinstance(m.shift, Shift8) and _fusable(m.conv2):
                m.conv2 = fuse_shift_conv(m.shift, m.conv2)   # conv2(relu(shift(z))) = conv2(shift(relu(z)))
                m.shift = nn.Identity()
            elif isinstance(m, nn.Sequential):
                for i in range(len(m) - 1):
                    if isinstance(m[i], Shift8) and _fusable(m[i + 1]):
                        m[i + 1] = fuse_shift_conv(m[i], m[i + 1])
                        m[i] = nn.Identity()
    for name, m in list(model.named_modules()):
        if isinstance(m, Shift8):
            like = next(iter(model.parameters()), None)
            model.set_submodule(name, shift_as_depthwise(m, like))
    return model
