"""Post-training quantization, and the machinery every technique shares: calibration data, prepare, convert."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import UsageError
from .config import QuantConfig, check_target
from ..models import min_size, scale_of, size_multiple, spec_of, unwrap
from .graph import QuantizedSR, capture, run_padded
from .quantizers import make_quantizer, unknown_keep_float

Calibration = Sequence[torch.Tensor] | Sequence[str | Path]


# ------------------------------------------------------------------------------- calibration data
def _crop(lr: np.ndarray, side: int, mult: int) -> np.ndarray:
    """Centre crop to ``side`` (rounded down to ``mult``); images smaller than that stay whole."""
    h, w = lr.shape[:2]
    ch, cw = min(h, side), min(w, side)
    ch, cw = max(mult, ch - ch % mult), max(mult, cw - cw % mult)
    y, x = (h - ch) // 2, (w - cw) // 2
    return lr[y:y + ch, x:x + cw]


def calibration_inputs(calib: Calibration, scale: int, cfg: QuantConfig, mult: int = 1,
                       progress: bool = False) -> list[torch.Tensor]:
    """LR tensors (1, 3, h, w) in [0, 1]: given tensors as they are, or the first ``calib_size`` images of
    HR folders turned into MATLAB-bicubic LR and centre-cropped to ``calib_patch``."""
    items = list(calib)
    if not items:
        raise UsageError("quantize: no calibration images given")
    if all(isinstance(t, torch.Tensor) for t in items):
        return [t if t.dim() == 4 else t.unsqueeze(0) for t in items[: cfg.calib_size]]
    from ..data.folders import hr_and_bicubic_lr, image_files
    from ..data.io import load_image, to_tensor

    paths = _spread(image_files(items, "quantize: calibration"), cfg.calib_size)
    out = []
    for p in tqdm(paths, desc="calibration LR", unit="img", disable=not progress, leave=False):
        _, lr = hr_and_bicubic_lr(load_image(p), scale)
        out.append(to_tensor(_crop(lr, cfg.calib_patch, mult)))
    return out


def _spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` images spread over all folders (not the first folder's first n), deterministic."""
    if len(paths) <= n:
        return paths
    idx = np.linspace(0, len(paths) - 1, n).round().astype(int)
    return [paths[i] for i in idx]


# ------------------------------------------------------------------------------------ shared flow
def prepare(model: nn.Module, target: str, cfg: QuantConfig, qat: bool = False,
            keep: Any = None, inputs: Sequence[torch.Tensor] | None = None,
            info: dict | None = None) -> torch.fx.GraphModule:
    """Capture ``model`` and insert the target's observers (PTQ) or fake-quantizers (QAT). The weight
    algorithms ``cfg`` asks for run between the two, on ``inputs`` (their statistics go to ``info``)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    gm = captured(model, cfg, target)
    bad = unknown_keep_float(gm, cfg)
    if bad:
        raise UsageError(f"quantize: keep_float names no module of the model: {bad[0]!r}")
    if cfg.equalize or cfg.scale_search or cfg.bias_correction:
        from . import weights
        from .quantizers import float_nodes

        found = weights.apply(gm, cfg, float_nodes(gm, cfg), inputs)
        if info is not None:
            info.update(found)
    quantizer = make_quantizer(target, cfg, qat=qat, keep=keep)
    prepared = prepare_qat_pt2e(gm, quantizer) if qat else prepare_pt2e(gm, quantizer)
    prepared.capture_min_size = getattr(gm, "capture_min_size", 1)
    return prepared


@torch.no_grad()
def calibrate(prepared: torch.fx.GraphModule, inputs: Iterable[torch.Tensor], progress: bool = False) -> None:
    inputs = list(inputs)
    for x in tqdm(inputs, desc="calibrating", unit="img", disable=not progress, leave=False):
        run_padded(prepared, x)


def convert(prepared: torch.fx.GraphModule, target: str) -> torch.fx.GraphModule:
    """Observers → quantize/dequantize pairs. litert-torch wants them unfolded (it folds them itself)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(prepared, fold_quantize=(target != "tflite"))


def _observers(prepared: torch.fx.GraphModule) -> dict[str, nn.Module]:
    """Observer / fake-quant modules keyed by the graph edge they sit on. Their own names
    (``activation_post_process_N``) follow the quantizer's annotation order, which is not stable for every
    quantizer (litert-torch's varies between runs); the names of the ops around them are."""
    out: dict[str, nn.Module] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or not str(node.target).startswith("activation_post_process"):
            continue
        src = node.args[0].name if node.args and hasattr(node.args[0], "name") else "?"
        users = ",".join(sorted(u.name for u in node.users))
        key = f"{src}->{users}"
        k, i = key, 1
        while k in out:
            k, i = f"{key}#{i}", i + 1
        out[k] = prepared.get_submodule(str(node.target))
    return out


def prepared_state(prepared: torch.fx.GraphModule) -> dict[str, Any]:
    observers = _observers(prepared)
    owned = {id(m) for m in observers.values()}
    params = {k: v.detach().clone() for k, v in prepared.state_dict().items()
              if not k.startswith("activation_post_process")}
    return {"params": params,
            "observers": {k: {n: t.detach().clone() for n, t in m.state_dict().items()}
                          for k, m in observers.items() if id(m) in owned}}


def load_prepared_state(prepared: torch.fx.GraphModule, state: dict[str, Any]) -> None:
    observers = _observers(prepared)
    if set(observers) != set(state["observers"]):
        missing = sorted(set(state["observers"]) ^ set(observers))
        raise RuntimeError(f"observer layout differs (e.g. {missing[0]})")
    missing, unexpected = prepared.load_state_dict(state["params"], strict=False)
    missing = [k for k in missing if not k.startswith("activation_post_process")]
    if missing or unexpected:
        raise RuntimeError(f"parameters differ (e.g. {(missing or unexpected)[0]})")
    for key, module in observers.items():
        sd = OrderedDict(state["observers"][key])
        # the observers' versioned loaders need the metadata a plain dict lost (else eps resets to 1.2e-7)
        sd._metadata = {name: {"version": getattr(m, "_version", 1)}  # type: ignore[attr-defined]
                        for name, m in module.named_modules()}
        module.load_state_dict(sd, strict=True)


def finish(model: nn.Module, prepared: torch.fx.GraphModule, target: str, mode: str, cfg: QuantConfig,
           scale: int, info: dict | None = None) -> QuantizedSR:
    """Keep the prepared state (what a checkpoint stores), convert, wrap as an SR model."""
    state = prepared_state(prepared)
    graph = convert(prepared, target)
    from ..reparam import record_of

    net = unwrap(model)[0]
    spec = spec_of(model).replace(scale=scale, structure=record_of(net) or record_of(model) or None)
    least = max(min_size(model), int(getattr(prepared, "capture_min_size", 1)))
    q = QuantizedSR(graph, spec=spec, target=target, mode=mode, mult=size_multiple(model),
                    min_size=least, config=dataclasses.asdict(cfg), info=info)
    q.prepared_state = state
    q.fp32_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return q


def model_scale(model: nn.Module) -> int:
    return scale_of(model)


# ------------------------------------------------------------------------------------------ PTQ
def ptq(model: nn.Module, target: str, calib_images: Calibration, config: QuantConfig | None = None,
        *, progress: bool = False) -> QuantizedSR:
    """Post-training int8 for ``target``: observe activation ranges on ``calib_images`` (LR tensors or HR image
    folders), convert. Returns the fake-quant model; ``edgesr.export`` lowers it for the same target."""
    cfg = config or QuantConfig()
    cfg.validate()
    check_target(target)
    if getattr(model, "quantized", False):
        raise UsageError("quantize: the model is already quantized")
    model = copy.deepcopy(model).eval()
    scale = model_scale(model)
    inputs = calibration_inputs(calib_images, scale, cfg, size_multiple(model), progress)
    cfg, info = guard_outliers(model, cfg, inputs, target)
    prepared = prepare(model, target, cfg, inputs=inputs, info=info)
    calibrate(prepared, inputs, progress)
    return finish(model, prepared, target, "ptq", cfg, scale, {"calibration_images": len(inputs), **info})


def captured(model: nn.Module, cfg: QuantConfig, target: str | None = None) -> torch.fx.GraphModule:
    """The graph ``cfg`` quantizes: the capture, with the outlier migration ``cfg.channel_scales`` holds."""
    gm = capture(model, clamp_output=cfg.clamp_output, target=target)
    if cfg.channel_scales:
        from . import migrate

        migrate.apply(gm, cfg.channel_scales)
    return gm


def guard_outliers(model: nn.Module, cfg: QuantConfig, inputs: list[torch.Tensor],
                   target: str | None = None) -> tuple[QuantConfig, dict]:
    """The data-dependent parts of ``cfg``, from the calibration inputs: the outlier migration's channel scales
    (``cfg.migrate``), then the activations still imbalanced, which ``keep_nodes`` keeps float
    (``cfg.outlier_ratio``). Both are stored with the checkpoint, so a reload rebuilds the same graph without
    the data."""
    info: dict = {}
    if cfg.migrate and not cfg.channel_scales:
        from . import migrate

        scales = migrate.plan(capture(model, clamp_output=cfg.clamp_output, target=target), inputs, cfg.migrate)
        cfg = dataclasses.replace(cfg, channel_scales=scales)
        info["migrated_groups"] = len(scales)
    if not cfg.outlier_ratio or cfg.keep_nodes:
        return cfg, info
    from .outliers import find_outliers, nodes_to_keep

    gm = captured(model, cfg, target)
    found = find_outliers(gm, inputs, cfg.outlier_ratio)
    keep = nodes_to_keep(gm, found)
    info.update({"outliers": [dataclasses.asdict(o) for o in found], "kept_float_nodes": len(keep)})
    return dataclasses.replace(cfg, keep_nodes=keep), info
