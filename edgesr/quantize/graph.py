"""Capture an SR model as one dynamic-shape graph, and the fake-quant model users evaluate.

One capture serves calibration on crops, QAT on patches and evaluation on whole images: H and W are
dynamic (multiples of what the model needs for its exact export form, e.g. 8 for SAFMN's pooling pyramid).
:class:`QuantizedSR` pads other sizes by edge replication and crops the result, so any image evaluates.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelSpec, min_size, size_multiple, unwrap
from ..reparam.forms import export_friendly, for_target

MAX_SIDE = 4096


class ClampOutput(nn.Module):
    """The captured root. With ``clamp`` the SR output is clamped to the image range inside the graph, so the
    output observer sees [0, 1]. Always present, so module paths in the graph are ``model.<path>``.

    A network written for 0-255 (``input_range``) is scaled in and out here: the int8 graph takes and gives
    [0, 1] like every other edgesr model (its artifact records input_range 1)."""

    def __init__(self, model: nn.Module, clamp: bool = True, input_range: float = 1.0) -> None:
        super().__init__()
        self.model, self.clamp, self.input_range = model, clamp, float(input_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range != 1.0:
            y = self.model(x * self.input_range) / self.input_range
        else:
            y = self.model(x)
        return y.clamp(0.0, 1.0) if self.clamp else y


def export_form(model: nn.Module, clamp_output: bool, target: str | None = None) -> nn.Module:
    """The graph that is quantized: the export form every backend delegates (in ``target``'s fastest form of
    exact ops), optional clamp."""
    net, input_range = unwrap(model)
    friendly = export_friendly(net).eval()
    for_target(friendly, target)
    for m in friendly.modules():  # int8 means accumulate exactly in int32: one pass (see models.layers.spatial_mean)
        if hasattr(m, "two_pass_mean"):
            m.two_pass_mean = False
    return ClampOutput(friendly, clamp_output, input_range)


_REUSE: dict[tuple, torch.fx.GraphModule] | None = None


@contextlib.contextmanager
def reuse_captures() -> Iterator[None]:
    """Within the block, a model captured before (same code structure, same weights, same options) is not
    exported again: each call gets a fresh copy of the first capture. ``torch.export`` is most of the time of
    one PTQ trial, and a search runs dozens of them on one model."""
    global _REUSE
    outer = _REUSE
    _REUSE = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSE = outer


def _capture_key(model: nn.Module, *options: object) -> tuple:
    h = hashlib.sha256(repr(model).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return (type(model).__qualname__, h.hexdigest(), *options)


def capture(model: nn.Module, clamp_output: bool = True, example_side: int | None = None,
            target: str | None = None) -> torch.fx.GraphModule:
    """``torch.export`` with dynamic H, W (and batch), as the graph module PT2E prepares.

    Code whose shapes branch at small sizes (a pooled map of size 1 broadcasts differently) cannot be one graph
    for every size from its minimum: the capture then raises its minimum side (32, 64, 128) and records it as
    the graph's ``min_size``; smaller inputs are padded by :class:`QuantizedSR`."""
    if _REUSE is None:
        return _capture(model, clamp_output, example_side, target)
    key = _capture_key(model, clamp_output, example_side, target)
    if key not in _REUSE:
        _REUSE[key] = _capture(model, clamp_output, example_side, target)
    gm = copy.deepcopy(_REUSE[key])
    gm.capture_min_size = _REUSE[key].capture_min_size
    return gm


def _capture(model: nn.Module, clamp_output: bool, example_side: int | None,
             target: str | None) -> torch.fx.GraphModule:
    from torch.export import Dim, export

    from ..reparam.hazards import explain_export_failure, tracking_modules

    mult = size_multiple(model)
    least = max(min_size(model), 2)
    form = export_form(model, clamp_output, target)
    first: BaseException | None = None
    for min_side in sorted({max(least, m) for m in (least, 2 * least, 4 * least, 32, 64, 128)}):
        side = example_side or mult * max(2, math.ceil(min_side / mult), 24 // mult)
        side = max(side, -(-min_side // mult) * mult)
        x = torch.rand(2, 3, side, side)
        batch = Dim("batch", min=1, max=1024)
        lo = math.ceil(min_side / mult)
        if mult > 1:
            h, w = mult * Dim("h", min=lo, max=MAX_SIDE // mult), mult * Dim("w", min=lo, max=MAX_SIDE // mult)
        else:
            h, w = Dim("h", min=min_side, max=MAX_SIDE), Dim("w", min=min_side, max=MAX_SIDE)
        with tracking_modules(form) as running:
            try:
                gm = export(form, (x,), dynamic_shapes={"x": {0: batch, 2: h, 3: w}}).module()
                gm.capture_min_size = lo * mult
                channel_operands_4d(gm)
                with torch.no_grad():  # a graph can pass export yet guard its smallest sizes (a pooled map of 1)
                    gm(torch.rand(1, 3, lo * mult, lo * mult))
                return gm
            except Exception as exc:  # the user's code: name the op, the module and what to change, in one line
                if first is None:
                    path = running.deepest.removeprefix("model.").removeprefix("model")
                    first = explain_export_failure(exc, form, "int8 capture (dynamic H, W)", path or None)
                if not any(k in str(exc).lower() for k in ("constraints violated", "guard failed")):
                    break
    raise first  # type: ignore[misc]


_ELEMENTWISE = (torch.ops.aten.mul.Tensor, torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor,
                torch.ops.aten.div.Tensor)


def channel_operands_4d(gm: torch.fx.GraphModule) -> int:
    """View the 3-D operand of an elementwise op on a 4-D tensor (a per-channel scale written ``w[:, None,
    None]``) as 4-D: the same broadcast, but LiteRT's layout pass moves only 4-D operands to NHWC, and with a 3-D
    one it keeps the op and the int8 tensors around it in NCHW behind two full-size transposes. Returns how many
    operands it viewed."""
    def val(a: object) -> Any:
        return a.meta.get("val") if isinstance(a, torch.fx.Node) else None

    done = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _ELEMENTWISE or len(node.args) < 2:
            continue
        vals = [val(a) for a in node.args[:2]]
        if not all(isinstance(v, torch.Tensor) for v in vals) or sorted(v.dim() for v in vals) != [3, 4]:
            continue
        i = 0 if vals[0].dim() == 3 else 1
        small = vals[i]
        if any(isinstance(s, torch.SymInt) for s in small.shape) or not small.is_contiguous():
            continue
        with gm.graph.inserting_before(node):
            view = gm.graph.call_function(torch.ops.aten.view.default, (node.args[i], [1, *small.shape]))
        view.meta["val"] = small.view(1, *small.shape)
        node.update_arg(i, view)
        done += 1
    if done:
        gm.recompile()
    return done


def pad_to_multiple(x: torch.Tensor, mult: int, min_side: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    th = max(-(-h // mult) * mult, -(-min_side // mult) * mult)
    tw = max(-(-w // mult) * mult, -(-min_side // mult) * mult)
    if (th, tw) == (h, w):
        return x, h, w
    return F.pad(x, (0, tw - w, 0, th - h), mode="replicate"), h, w


def call_padded(fn: Any, x: torch.Tensor, mult: int, min_side: int) -> torch.Tensor:
    """``fn`` on ``x`` edge-padded to sides that are multiples of ``mult`` and at least ``min_side``, its output
    cropped back to the input's extent (times the scale)."""
    xp, h, w = pad_to_multiple(x, mult, min_side)
    y = fn(xp)
    s = y.shape[-1] // xp.shape[-1]
    return y[..., : h * s, : w * s]


def run_padded(graph: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``graph(x)`` for inputs below the capture's minimum side (edge-padded, output cropped back)."""
    return call_padded(graph, x, 1, int(getattr(graph, "capture_min_size", 1)))


class SameInput(nn.Module):
    """A float model run as a :class:`QuantizedSR` runs its graph: input edge-padded to ``mult`` (and at least
    ``min_size``), output cropped back."""

    def __init__(self, model: nn.Module, mult: int, min_size: int) -> None:
        super().__init__()
        self.model, self.mult, self.min_size = model, mult, min_size
        self.scale = int(getattr(model, "scale", 1) or 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_padded(self.model, x, self.mult, self.min_size)


class QuantizedSR(nn.Module):
    """A converted PT2E graph (quantize/dequantize around every int8 op) as an SR model: it evaluates in
    PyTorch exactly as the int8 kernels compute (up to rounding), and it is what ``export`` lowers.

    ``graph`` holds the quantized model; ``prepared_state`` and ``info`` are what the checkpoint stores.
    """

    def __init__(self, graph: torch.fx.GraphModule, *, spec: ModelSpec, target: str, mode: str,
                 mult: int, min_size: int, config: dict, info: dict | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.spec, self.target, self.mode = spec, target, mode
        self.name, self.scale = spec.label, int(spec.scale or 1)
        self.edgesr_spec = spec
        self.mult, self.min_size, self.config = mult, min_size, config
        self.info = dict(info or {})
        self.quantized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_padded(self.graph, x, self.mult, self.min_size)

    def same_input(self, fp32: nn.Module) -> "SameInput":
        """``fp32`` run on the input this int8 graph sees (edge-padded to its size multiple, cropped back).

        The int8 drop is measured against it: on an image whose sides are not multiples of the graph's,
        padding alone changes a size-dependent network (SAFMN NTIRE's pooling grid and global norm: Set5
        fp32 32.168 dB whole, 32.118 padded), which is not int8 error and which the fp32 artifact, padded to
        its input size, pays too."""
        return SameInput(fp32, self.mult, self.min_size)

    def train(self, mode: bool = True) -> "QuantizedSR":  # the converted graph has no train mode
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"{self.name} x{self.scale}, int8 for {self.target} ({self.mode})"
