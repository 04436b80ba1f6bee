"""Model registry: ``create(name, scale, weights)`` returns an eval-mode network.

Every family lives in one self-contained file; importing them here registers their names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, UsageError
from ..zoo import zoo_path
from . import eimn, lamnet, safmn, scnet  # noqa: F401  (registration side effect)
from ._registry import SCALES, factory, names, register_model
from .checkpoint import (
    extract_state_dict,
    is_edgesr_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)

__all__ = ["create", "names", "register_model", "load_weights", "resolve_weights", "save_checkpoint", "SCALES",
           "num_params"]


def create(name: str, scale: int = 4, weights: str | Path | None = None,
           param_key: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model for ``scale`` (2, 3 or 4), optionally load weights, return it in eval mode.

    ``weights`` is a path to a raw state_dict, a BasicSR file (``params_ema`` preferred over
    ``params`` unless ``param_key`` says otherwise) or an edgesr checkpoint.
    """
    fn = factory(name)
    supported = getattr(fn, "scales", SCALES)
    if scale not in supported:
        raise UsageError(f"{name} supports scales {', '.join(map(str, supported))}, got {scale}")
    if weights is not None:
        weights = resolve_weights(weights, name, scale)
        ckpt = read_checkpoint(weights)
        if is_quantized_checkpoint(ckpt):  # int8 from `edgesr quantize`: the fake-quant model
            from ..quantize.checkpoint import load_quantized

            return load_quantized(ckpt, name, scale, source=weights)
        if is_edgesr_checkpoint(ckpt):
            _check_edgesr_header(ckpt, name, scale, weights)
            overrides = {**ckpt.get("config", {}), **overrides}
    model = fn(scale=scale, **overrides)
    if weights is not None:
        if is_edgesr_checkpoint(ckpt):  # an expanded / deployed checkpoint: rebuild its structure first
            from ..reparam import rebuild, transform_of

            model = rebuild(model, transform_of(ckpt))
        state = extract_state_dict(ckpt, param_key, source=str(weights))
        load_state_dict_strict(model, state, f"{name} x{scale}", str(weights))
    model.edgesr_name, model.edgesr_config = name, dict(overrides)  # what a later stage needs to rebuild it
    return model.eval()


def load_weights(model: nn.Module, weights: str | Path, model_name: str = "model",
                 param_key: str | None = None) -> nn.Module:
    """Strictly load any accepted weights format into an existing model."""
    ckpt = read_checkpoint(weights)
    state = extract_state_dict(ckpt, param_key, source=str(weights))
    load_state_dict_strict(model, state, model_name, str(weights))
    return model


def resolve_weights(weights: str | Path, name: str, scale: int) -> Path:
    """``"zoo"`` means the weights edgesr ships for this name and scale; anything else is a path."""
    return zoo_path(name, scale) if str(weights) == "zoo" else Path(weights)


def _check_edgesr_header(ckpt: dict[str, Any], name: str, scale: int, source: str | Path) -> None:
    if ckpt.get("model") not in (None, name):
        raise CheckpointError(f"{source} is an edgesr checkpoint of {ckpt['model']!r}, not {name!r}")
    if ckpt.get("scale") not in (None, scale):
        raise CheckpointError(f"{source} is an edgesr checkpoint for x{ckpt['scale']}, not x{scale}")


def is_quantized_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == "edgesr-quant"


def num_params(model: nn.Module) -> int:
    """Trainable parameters, the number papers report (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
