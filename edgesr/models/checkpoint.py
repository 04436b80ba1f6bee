"""Reading every weights format users bring, and writing edgesr's own.

Accepted: a raw state_dict, a BasicSR file (``{'params': ...}`` / ``{'params_ema': ...}``), or an
edgesr checkpoint (a dict with ``format == 'edgesr'`` that also records model name, scale, config and
the recipe that produced it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..io_utils import atomic_write_bytes

FORMAT = "edgesr"
VERSION = 1
BASICSR_KEYS = ("params_ema", "params")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a weights file into a dict, turning every failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle of arbitrary objects, truncated file ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read weights file {path}: {first}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"weights file {path} holds a {type(obj).__name__}, not a state_dict")
    return dict(obj)


def is_edgesr_checkpoint(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == FORMAT and "state_dict" in obj


def extract_state_dict(obj: Mapping[str, Any], param_key: str | None = None,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors inside any accepted format; BasicSR's ``params_ema`` wins unless overridden."""
    if is_edgesr_checkpoint(obj):
        obj = obj["state_dict"]
    if param_key is not None:
        if param_key not in obj:
            raise CheckpointError(f"{source} has no {param_key!r} entry (keys: {_preview(obj)})")
        obj = obj[param_key]
    else:
        for key in BASICSR_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{source} contains no tensors (keys: {_preview(obj)})")
    return state


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor],
                           model_name: str, source: str) -> None:
    """Strict load whose error names the model, the file and the first offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} (file {list(state[k].shape)} vs model {list(own[k].shape)})"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), first: {', '.join(mismatched[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first: {', '.join(unexpected[:3])}")
        raise CheckpointError(f"{source} does not fit {model_name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_checkpoint(path: str | Path, model: nn.Module, *, model_name: str | None = None, scale: int | None = None,
                    config: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write an edgesr checkpoint atomically (temp file in the same folder, then rename).

    The model's spec (``model.edgesr_spec``, set by ``edgesr.models.build``) is recorded, so a network from
    the user's code reloads from the file alone; a 0-255 network's weights are those of the network itself.
    """
    spec = getattr(model, "edgesr_spec", None)
    spec_json = spec.to_json() if hasattr(spec, "to_json") else None
    net = model.net if hasattr(model, "input_range") and isinstance(getattr(model, "net", None), nn.Module) else model
    if spec_json is not None:
        spec_json = {**spec_json, "weights": None}
        model_name = model_name or spec_json["model"]
        scale = scale or spec_json["scale"]
        if config is None:
            config = spec_json.get("kwargs") or {}
    if model_name is None or scale is None:
        raise CheckpointError("save_checkpoint: name the model and scale (model_name=, scale=) for a module "
                              "not built by edgesr.models.build")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "scale": int(scale),
        "config": dict(config or {}),
        "spec": spec_json,
        "recipe": dict(recipe) if recipe is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _preview(obj: Mapping[str, Any], n: int = 5) -> str:
    keys = list(obj)
    return ", ".join(map(str, keys[:n])) + (" ..." if len(keys) > n else "")
