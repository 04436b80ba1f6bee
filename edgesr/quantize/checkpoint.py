"""A quantized checkpoint holds what rebuilds the fake-quant model exactly: the model spec (network, scale,
kwargs, input range, reparameterized structure), the fp32 weights the graph was captured from, the
quantization config, and the prepared graph's state (observer ranges; QAT weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError
from ..models import ModelSpec, load_state_dict_strict, read_checkpoint, unwrap
from ..models.checkpoint import atomic_torch_save
from .config import QuantConfig
from .graph import QuantizedSR

FORMAT, VERSION = "edgesr-quant", 2


def save_quantized(q: QuantizedSR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``q`` atomically; :func:`load` gives it back."""
    if not isinstance(q, QuantizedSR) or not hasattr(q, "prepared_state"):
        raise CheckpointError("save_quantized needs the model returned by edgesr.quantize.ptq/qat")
    spec = q.spec.replace(weights=None)  # the fp32 weights travel inside
    ckpt = {"format": FORMAT, "version": VERSION, "edgesr": __version__, "model": spec.model, "scale": q.scale,
            "spec": spec.to_json(), "target": q.target, "mode": q.mode, "config": q.config,
            "fp32_state_dict": q.fp32_state, "prepared_state": q.prepared_state, "info": q.info,
            **(extra or {})}
    path = Path(path)
    atomic_torch_save(ckpt, path)
    q.source_path = str(path)
    return path


def load(ckpt: dict[str, Any] | str | Path, spec: ModelSpec | None = None,
         source: str | Path = "checkpoint") -> QuantizedSR:
    """Rebuild the fake-quant model of an int8 checkpoint: same network (from its recorded spec, or ``spec``
    for a user network whose code moved), same capture, same quantizer, saved state, convert."""
    from ..config import from_dict
    from .ptq import finish, load_prepared_state, prepare

    if not isinstance(ckpt, dict):
        source = ckpt
        ckpt = read_checkpoint(ckpt)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a quantized edgesr checkpoint")
    if ckpt.get("version") not in (1, VERSION):
        raise CheckpointError(f"{source}: quantized checkpoint version {ckpt.get('version')} is not supported")
    recorded = ModelSpec.from_json(ckpt["spec"]) if isinstance(ckpt.get("spec"), dict) else ModelSpec(
        ckpt["model"], ckpt["scale"], kwargs=dict(ckpt.get("model_config") or {}), structure=ckpt.get("reparam"))
    if spec is not None:
        if spec.model != recorded.model and ":" not in spec.model:
            raise CheckpointError(f"{source} is an int8 checkpoint of {recorded.model!r}, not {spec.model!r}")
        if spec.scale not in (None, recorded.scale):
            raise CheckpointError(f"{source} is an int8 checkpoint for x{recorded.scale}, not x{spec.scale}")
        recorded = recorded.replace(model=spec.model, kwargs=spec.kwargs or recorded.kwargs)
    recorded = recorded.replace(weights=None, structure=recorded.structure or ckpt.get("reparam") or None)
    cfg = from_dict(QuantConfig, ckpt["config"])
    torch.manual_seed(0)
    model = _bare(recorded)
    net = unwrap(model)[0]
    load_state_dict_strict(net, ckpt["fp32_state_dict"], f"{recorded.label} x{recorded.scale}", str(source))
    qat = ckpt["mode"] == "qat"
    prepared = prepare(model, ckpt["target"], cfg, qat=qat)
    try:
        load_prepared_state(prepared, ckpt["prepared_state"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source}: the quantized graph does not match this edgesr/torch version "
                              f"({first}); re-run `edgesr quantize`") from None
    if qat:
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(prepared)
    q = finish(model, prepared, ckpt["target"], ckpt["mode"], cfg, int(recorded.scale), ckpt.get("info"))
    if isinstance(source, (str, Path)) and Path(source).is_file():
        q.source_path = str(source)
    return q


def fp32_of(q: QuantizedSR) -> nn.Module:
    """The fp32 network an int8 model was quantized from (its recorded structure and weights), in eval mode."""
    model = _bare(q.spec.replace(weights=None))
    load_state_dict_strict(unwrap(model)[0], q.fp32_state, f"{q.spec.label} x{q.spec.scale}", "int8 model")
    return model.eval()


def _bare(spec: ModelSpec) -> nn.Module:
    """The network of ``spec`` with its recorded structure and no weights (they are loaded after)."""
    from ..reparam import load as load_float

    return load_float(spec.replace(weights=None))


def load_model(spec: ModelSpec) -> nn.Module:
    """Whatever the spec's weights file holds, as a model: int8 (fake-quant), reparameterized or plain float."""
    from ..models import kind_of, resolve_weights

    if spec.weights is not None and kind_of(spec.model) != "spandrel":
        ckpt = read_checkpoint(resolve_weights(spec))
        if ckpt.get("format") == FORMAT:
            return load(ckpt, spec, source=spec.weights)
    from ..reparam import load as load_float

    return load_float(spec)


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "quantized", False))


load_quantized = load  # the name earlier releases used

__all__ = ["save_quantized", "load", "load_model", "load_quantized", "is_quantized", "fp32_of", "FORMAT"]
