"""Models: ``create(name, scale, weights)`` / ``build(ModelSpec(...))`` return an eval-mode float network.

Every family lives in one self-contained file; importing them here registers their names. Networks edgesr
does not know come in through :class:`ModelSpec` (``path/to/file.py:NAME``, ``package.module:NAME``).
Reparameterized checkpoints load with ``edgesr.reparam.load``, int8 checkpoints with ``edgesr.quantize.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from . import eimn, lamnet, safmn, scnet  # noqa: F401  (registration side effect)
from .checkpoint import (
    extract_state_dict,
    is_edgesr_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)
from .registry import SCALES, factory, names, register_model
from .spec import (
    InputRange,
    ModelSpec,
    build,
    describe,
    detect_registry_model,
    input_range_of,
    kind_of,
    min_size,
    probe_sizes,
    resolve_weights,
    scale_of,
    size_multiple,
    spec_of,
    unwrap,
)

__all__ = ["create", "build", "ModelSpec", "InputRange", "names", "register_model", "load_weights", "save_checkpoint",
           "SCALES", "num_params", "spec_of", "scale_of", "unwrap", "input_range_of", "kind_of", "probe_sizes",
           "size_multiple", "min_size", "describe", "detect_registry_model", "resolve_weights", "factory",
           "read_checkpoint", "extract_state_dict", "load_state_dict_strict", "is_edgesr_checkpoint",
           "is_quantized_checkpoint"]


def create(name: str, scale: int = 4, weights: str | Path | None = None,
           param_key: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model for ``scale`` (2, 3 or 4), optionally load weights, return it in eval mode.

    ``weights`` is a path to a raw state_dict, a BasicSR file (``params_ema`` preferred over ``params``
    unless ``param_key`` says otherwise), an edgesr checkpoint, or ``"zoo"``.
    """
    return build(ModelSpec(name, scale, weights=None if weights is None else str(weights), param_key=param_key,
                           kwargs=dict(overrides)))


def load_weights(model: nn.Module, weights: str | Path, model_name: str = "model",
                 param_key: str | None = None) -> nn.Module:
    """Strictly load any accepted weights format into an existing model."""
    ckpt = read_checkpoint(weights)
    state = extract_state_dict(ckpt, param_key, source=str(weights))
    load_state_dict_strict(model, state, model_name, str(weights))
    return model


def is_quantized_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == "edgesr-quant"


def num_params(model: nn.Module) -> int:
    """Trainable parameters, the number papers report (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
