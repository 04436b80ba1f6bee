"""A quantized checkpoint holds what rebuilds the fake-quant model exactly: the fp32 weights the graph was
captured from, the quantization config, and the prepared graph's state (observer ranges; QAT weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CheckpointError
from ..models.checkpoint import atomic_torch_save
from .config import QuantConfig
from .graph import QuantizedSR

FORMAT, VERSION = "edgesr-quant", 1


def save_quantized(q: QuantizedSR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``q`` atomically; ``edgesr.models.create(name, scale, weights=path)`` gives it back."""
    if not isinstance(q, QuantizedSR) or not hasattr(q, "prepared_state"):
        raise CheckpointError("save_quantized needs the model returned by edgesr.quantize.ptq/qat")
    ckpt = {"format": FORMAT, "version": VERSION, "edgesr": __version__, "model": q.name, "scale": q.scale,
            "target": q.target, "mode": q.mode, "config": q.config, "model_config": q.fp32_config,
            "fp32_state_dict": q.fp32_state, "prepared_state": q.prepared_state, "info": q.info,
            **(extra or {})}
    path = Path(path)
    atomic_torch_save(ckpt, path)
    q.source_path = str(path)
    return path


def load_quantized(ckpt: dict[str, Any] | str | Path, name: str | None = None, scale: int | None = None,
                   source: str | Path = "checkpoint") -> QuantizedSR:
    """Rebuild the fake-quant model: same capture, same quantizer, saved state, convert."""
    from ..config import from_dict
    from ..models import create
    from ..models.checkpoint import load_state_dict_strict, read_checkpoint
    from .ptq import finish, load_prepared_state, prepare

    if not isinstance(ckpt, dict):
        source = ckpt
        ckpt = read_checkpoint(ckpt)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a quantized edgesr checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{source}: quantized checkpoint version {ckpt.get('version')} is not supported")
    if name is not None and ckpt["model"] != name:
        raise CheckpointError(f"{source} is an int8 checkpoint of {ckpt['model']!r}, not {name!r}")
    if scale is not None and ckpt["scale"] != scale:
        raise CheckpointError(f"{source} is an int8 checkpoint for x{ckpt['scale']}, not x{scale}")
    cfg = from_dict(QuantConfig, ckpt["config"])
    model = create(ckpt["model"], ckpt["scale"], **ckpt.get("model_config", {}))
    if ckpt.get("reparam"):  # quantized after `deploy`/`expand`: rebuild that structure first
        from ..reparam import rebuild

        model = rebuild(model, ckpt["reparam"])
    load_state_dict_strict(model, ckpt["fp32_state_dict"], f"{ckpt['model']} x{ckpt['scale']}", str(source))
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
    q = finish(model, prepared, ckpt["target"], ckpt["mode"], cfg, int(ckpt["scale"]), ckpt.get("info"))
    if isinstance(source, (str, Path)) and Path(source).is_file():
        q.source_path = str(source)
    return q


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "quantized", False))


__all__ = ["save_quantized", "load_quantized", "is_quantized", "FORMAT"]
