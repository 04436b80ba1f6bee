"""Spatial shifts as convolutions, for any architecture whose blocks say how.

A module with ``to_depthwise()`` (SCNet's ``Shift8``) becomes the conv it returns; a module with
``fuse_shift()`` (SCNet's residual block and upsampler stages) fuses its shift into the 1×1 conv after it
(``mode="dense"``). Which form is faster depends on the target: the dense 3×3 costs 9× the MACs of the 1×1
it replaces (it removes only the pad + 8 slices + concat), the depthwise form swaps copies for a cheap conv.
``benchmarks/reparam.py`` measures all three on the host; see ``DEFAULT_SHIFT`` in ``edgesr.reparam``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..models.scnet import Shift8, fuse_shift_conv

__all__ = ["ShiftMode", "shift_as_depthwise", "fuse_shift_conv", "shift_to_conv"]

ShiftMode = Literal["slice", "depthwise", "dense"]


def shift_as_depthwise(shift: Shift8) -> nn.Conv2d:
    """A frozen depthwise 3×3 conv equal to ``shift`` (exact: each output reads one input times 1.0)."""
    return shift.to_depthwise()


def shift_to_conv(model: nn.Module, mode: ShiftMode = "depthwise") -> nn.Module:
    """Rewrite every shift of ``model`` in place as ``mode``; returns ``model``.

    ``"depthwise"``: each shift becomes its frozen one-hot depthwise conv. ``"dense"``: each shift with a 1×1
    conv after it (through a zero-preserving activation) is fused into that conv; any other becomes
    depthwise. ``"slice"``: unchanged (pad + slices + concat).
    """
    if mode not in ("slice", "depthwise", "dense"):
        raise ValueError(f"unknown shift mode {mode!r} (slice, depthwise, dense)")
    if mode == "slice":
        return model
    if mode == "dense":
        for m in list(model.modules()):
            if hasattr(m, "fuse_shift"):
                m.fuse_shift()
    for name, m in list(model.named_modules()):
        if name and hasattr(m, "to_depthwise"):
            model.set_submodule(name, m.to_depthwise())
    return model
