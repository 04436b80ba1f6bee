"""Which layers int8 hurts: quantize one layer at a time and measure what the output loses."""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..metrics import psnr
from .config import QuantConfig, check_target
from ..models import size_multiple
from .graph import capture, export_form
from .ptq import Calibration, calibrate, calibration_inputs, convert, model_scale
from .quantizers import conv_nodes, make_quantizer, module_path


def layer_names(model: nn.Module, cfg: QuantConfig) -> list[str]:
    """Module paths of the convolutions, in graph order (the units the analysis quantizes alone)."""
    gm = capture(model, clamp_output=cfg.clamp_output)
    seen: list[str] = []
    for n in conv_nodes(gm):
        p = module_path(n)
        if p not in seen:
            seen.append(p)
    return seen


def _sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = float(((ref - out) ** 2).mean())
    signal = float((ref ** 2).mean())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)




@torch.no_grad()
def sensitivity(model: nn.Module, target: str, calib_images: Calibration, config: QuantConfig | None = None,
                *, layers: Sequence[str] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Per layer, without ground truth: ``sqnr_db`` of the SR output (fp32 as signal) and ``psnr_vs_fp32`` (PSNR
    of the one-layer-int8 output against the fp32 output); rows sorted worst first. With HR images,
    :func:`edgesr.quantize.auto.layer_drops` gives the drop in the task's unit (PSNR-Y vs HR, dB)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    cfg = config or QuantConfig()
    cfg.validate()
    check_target(target)
    model = copy.deepcopy(model).eval()
    inputs = calibration_inputs(calib_images, model_scale(model), cfg, size_multiple(model))
    reference = export_form(model, cfg.clamp_output)
    refs = [reference(x) for x in inputs]
    names = list(layers) if layers is not None else layer_names(model, cfg)
    rows = []
    base = capture(model, clamp_output=cfg.clamp_output, target=target)
    for name in tqdm(names, desc="sensitivity", unit="layer", disable=not progress):
        def keep(gm: torch.fx.GraphModule, name: str = name) -> set:
            return {n for n in gm.graph.nodes if n.op == "call_function"
                    and not (module_path(n) == name or module_path(n).startswith(name + "."))}

        prepared = prepare_pt2e(copy.deepcopy(base), make_quantizer(target, cfg, keep=keep))
        calibrate(prepared, inputs)
        q = convert(prepared, target)
        outs = [q(x) for x in inputs]
        sqnr = sum(_sqnr_db(r, o) for r, o in zip(refs, outs)) / len(refs)
        vs_fp32 = sum(min(psnr(r.clamp(0, 1).numpy(), o.clamp(0, 1).numpy(), peak=1.0), 100.0)
                      for r, o in zip(refs, outs)) / len(refs)
        rows.append({"layer": name, "sqnr_db": sqnr, "psnr_vs_fp32": vs_fp32})
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows
