"""Capture an SR model as one dynamic-shape graph, and the fake-quant model users evaluate.

One capture serves calibration on crops, QAT on patches and evaluation on whole images: H and W are
dynamic (multiples of what the model needs for its exact export form, e.g. 8 for SAFMN's pooling pyramid).
:class:`QuantizedSR` pads other sizes by edge replication and crops the result, so any image evaluates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_SIDE = 4096


class ClampOutput(nn.Module):
    """The captured root. With ``clamp`` the SR output is clamped to the image range inside the graph, so the
    output observer sees [0, 1]. Always present, so module paths in the graph are ``model.<path>``."""

    def __init__(self, model: nn.Module, clamp: bool = True) -> None:
        super().__init__()
        self.model, self.clamp = model, clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y.clamp(0.0, 1.0) if self.clamp else y


def size_multiple(model: nn.Module) -> int:
    from ..export.exporters import required_multiple

    return required_multiple(model)


def export_form(model: nn.Module, clamp_output: bool) -> nn.Module:
    """The graph that is quantized: the export-friendly rewrites every backend delegates, optional clamp."""
    from ..export.rewrites import applicable_rewrites, export_friendly

    names = applicable_rewrites(model)
    friendly = export_friendly(model, names) if names else model
    friendly = friendly.eval()
    for m in friendly.modules():  # int8 means accumulate exactly in int32: one pass (see rewrites.spatial_mean)
        if hasattr(m, "two_pass_mean"):
            m.two_pass_mean = False
    return ClampOutput(friendly, clamp_output)


def capture(model: nn.Module, clamp_output: bool = True, example_side: int | None = None) -> torch.fx.GraphModule:
    """``torch.export`` with dynamic H, W (and batch), as the graph module PT2E prepares."""
    from torch.export import Dim, export

    mult = size_multiple(model)
    min_side = max(int(getattr(model, "min_size", 1)), 2)
    form = export_form(model, clamp_output)
    side = example_side or mult * max(2, math.ceil(min_side / mult), 24 // mult)
    x = torch.rand(2, 3, side, side)
    batch = Dim("batch", min=1, max=1024)
    if mult > 1:
        h = mult * Dim("h", min=math.ceil(min_side / mult), max=MAX_SIDE // mult)
        w = mult * Dim("w", min=math.ceil(min_side / mult), max=MAX_SIDE // mult)
    else:
        h, w = Dim("h", min=min_side, max=MAX_SIDE), Dim("w", min=min_side, max=MAX_SIDE)
    return export(form, (x,), dynamic_shapes={"x": {0: batch, 2: h, 3: w}}).module()


def pad_to_multiple(x: torch.Tensor, mult: int, min_side: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    th = max(-(-h // mult) * mult, -(-min_side // mult) * mult)
    tw = max(-(-w // mult) * mult, -(-min_side // mult) * mult)
    if (th, tw) == (h, w):
        return x, h, w
    return F.pad(x, (0, tw - w, 0, th - h), mode="replicate"), h, w


class QuantizedSR(nn.Module):
    """A converted PT2E graph (quantize/dequantize around every int8 op) as an SR model: it evaluates in
    PyTorch exactly as the int8 kernels compute (up to rounding), and it is what ``export`` lowers.

    ``graph`` holds the quantized model; ``prepared_state`` and ``info`` are what the checkpoint stores.
    """

    def __init__(self, graph: torch.fx.GraphModule, *, name: str, scale: int, target: str, mode: str,
                 mult: int, min_size: int, config: dict, info: dict | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.name, self.scale, self.target, self.mode = name, scale, target, mode
        self.mult, self.min_size, self.config = mult, min_size, config
        self.info = dict(info or {})
        self.quantized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.mult, self.min_size)
        y = self.graph(xp)
        return y[..., : h * self.scale, : w * self.scale]

    def train(self, mode: bool = True) -> "QuantizedSR":  # the converted graph has no train mode
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"{self.name} x{self.scale}, int8 for {self.target} ({self.mode})"
