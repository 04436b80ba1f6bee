"""Model-to-model transforms: ``expand`` for training, ``collapse`` / ``deploy`` for inference.

Every function edits the model in place and returns it (as ``torchao.quantize_``), and records what it
did on the model (``record_of``) so that checkpoints can say how to rebuild the structure before a strict
load (``rebuild``). Structures depend only on the architecture and the recorded options, never on weight
values, so ``rebuild(fresh model, record)`` always has exactly the saved keys and shapes.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..errors import UsageError

if TYPE_CHECKING:
    from ..models import ModelSpec
from .blocks import ECBConv, RepConv, RepVGGConv, SESRConv
from .fold import fold_norms
from .shift import ShiftMode, shift_to_conv

__all__ = ["KINDS", "DEFAULT_SHIFT", "eligible", "expand_targets", "parse_expand", "expand", "collapse", "deploy",
           "record_of", "transform_of", "rebuild", "inplace_ops", "load"]

KINDS: dict[str, type[RepConv]] = {"repvgg": RepVGGConv, "ecb": ECBConv, "sesr": SESRConv}

# How deploy() writes SCNet's Shift8, chosen by measurement (benchmarks/reparam.py; SCNet-T x4, 1×3×180×320,
# x86-64 AVX2 host, 2 threads, ExecuTorch XNNPACK fp32, median of 5 interleaved runs): pad + slices + cat
# 2867 ms, one-hot depthwise conv 1315 ms (0.46×), shift fused into a dense 3×3 7940 ms (2.8×: 4.2× the MACs).
# (forms lowered as they are; edgesr's exporters rewrite a remaining Shift8 into the same depthwise conv).
# In eager PyTorch the depthwise form runs as slices (``ShiftDepthwise``), so deploy is not slower there either.
DEFAULT_SHIFT: ShiftMode = "depthwise"

_ATTR = "_edgesr_reparam"


def record_of(model: nn.Module) -> dict[str, Any]:
    """What has been done to ``model``: {} (plain), {"expand": kind, **options} or {"deploy": True, ...}."""
    return dict(getattr(model, _ATTR, {}))


def _set_record(model: nn.Module, record: dict[str, Any]) -> None:
    setattr(model, _ATTR, record)  # a plain attribute: copied by deepcopy, not part of the state_dict


def eligible(m: nn.Module) -> bool:
    """A plain conv a multi-branch block can stand in for: stride 1, groups 1, dilation 1, odd square
    kernel, zero 'same' padding (anything else would not collapse back into the same conv)."""
    if type(m) is not nn.Conv2d:
        return False
    k = m.kernel_size[0]
    same = m.padding == "same" or m.padding == (k // 2, k // 2)
    return (m.kernel_size == (k, k) and k % 2 == 1 and m.groups == 1 and m.stride == (1, 1)
            and m.dilation == (1, 1) and m.padding_mode == "zeros" and same)


def expand_targets(model: nn.Module, kind: str) -> list[str]:
    """The convs ``expand`` replaces: every eligible dense 3×3 conv, or — in an all-1×1 network such as
    SCNet — every eligible 1×1 conv. Depthwise, dilated and strided convs never qualify.

    SAFMN: to_feat, feats.*.ccm.ccm.0, to_img.0; EIMN: head.0, tail.0; LAMNet: the shallow conv, the
    deep conv and upsample.0; SCNet: all 1×1 convs (repvgg / sesr; ECB's edge filters need 3×3).
    """
    convs = {n: m for n, m in model.named_modules() if eligible(m)}
    k = 3 if any(m.kernel_size == (3, 3) for m in convs.values()) else 1
    if kind == "ecb" and k != 3:
        raise UsageError(f"expand kind 'ecb' needs 3×3 convs; {type(model).__name__} has none "
                         "(use 'repvgg' or 'sesr')")
    return [n for n, m in convs.items() if m.kernel_size == (k, k)]


def parse_expand(spec: str, **options: Any) -> dict[str, Any]:
    """``"sesr"`` or ``"sesr:expansion=96"`` (+ keyword options) -> the full record with every default filled,
    e.g. ``{"expand": "sesr", "expansion": 96}``: what a recipe string or a checkpoint entry means."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise UsageError(f"unknown expand kind {kind!r}; choose from {', '.join(KINDS)}")
    params = inspect.signature(KINDS[kind].__init__).parameters
    full = {k: p.default for k, p in params.items() if k not in ("self", "conv")}
    given = dict(options)
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"expand option {item!r} in {spec!r} is not key=value")
        given[key.strip()] = _number(value.strip())
    unknown = sorted(set(given) - set(full))
    if unknown:
        raise UsageError(f"expand {kind!r} has no option {unknown[0]!r} (options: {', '.join(full) or 'none'})")
    return {"expand": kind, **full, **given}


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"expand option value {text!r} is not a number") from None


def expand(model: nn.Module, kind: str, **options: Any) -> nn.Module:
    """Replace the convs of ``expand_targets`` by ``kind`` blocks (``repvgg``, ``ecb``, ``sesr``).

    Function-preserving: the expanded model computes what it computed before (original kernel in the
    main branch, extra branches starting at zero), so expanding a trained model loses nothing.
    Options (keywords, or in the kind string as ``"sesr:expansion=96"``): ``expansion`` (sesr, hidden
    channels, default 256) and ``depth_multiplier`` (ecb, default 2). Expanding again with the same kind
    and options is a no-op (so a recipe can continue from an expanded checkpoint).
    """
    record = parse_expand(kind, **options)
    done = record_of(model)
    if done.get("deploy"):
        raise UsageError("cannot expand a deployed model (its norms are folded); start from the trained one")
    if done.get("expand"):
        if done == record:
            return model
        raise UsageError(f"model is already expanded as {done!r}, not {record!r}; collapse it first or "
                         "ask for the same expansion")
    kind, block_options = record["expand"], {k: v for k, v in record.items() if k != "expand"}
    targets = expand_targets(model, kind)
    if not targets:
        raise UsageError(f"{type(model).__name__} has no conv that {kind!r} can expand")
    try:
        for name in targets:
            conv = model.get_submodule(name)
            model.set_submodule(name, KINDS[kind](conv, **block_options).train(conv.training))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"expand {kind!r}: {exc}") from None
    _set_record(model, record)
    return model


def collapse(model: nn.Module) -> nn.Module:
    """Turn every multi-branch block back into one ``nn.Conv2d`` (exact up to float rounding).

    The conv has a bias exactly when the original had one, so a collapsed model has the registry
    model's keys: its state_dict loads into ``create(name, scale)`` with no record.
    """
    for name, m in list(model.named_modules()):
        if isinstance(m, RepConv):
            model.set_submodule(name, m.to_conv())
    if record_of(model).get("expand"):
        _set_record(model, {})
    return model


def deploy(model: nn.Module, shift: ShiftMode | None = None) -> nn.Module:
    """The inference graph quantization and export consume: collapse, fold norms, rewrite shifts,
    no in-place modules; eval mode. ``shift`` defaults to ``DEFAULT_SHIFT`` (the measured fastest)."""
    shift = DEFAULT_SHIFT if shift is None else shift
    model.eval()
    collapse(model)
    fold_norms(model)
    shift_to_conv(model, shift)
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    _set_record(model, {"deploy": True, "shift": shift})
    return model


def transform_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The structural record of an edgesr checkpoint: its ``"reparam"`` entry, or — for a checkpoint
    written by ``edgesr train`` with ``model.expand`` — the expansion named in its recipe."""
    record = ckpt.get("reparam")
    if isinstance(record, Mapping):
        return dict(record)
    recipe = ckpt.get("recipe") if isinstance(ckpt.get("recipe"), Mapping) else {}
    spec = recipe.get("model") if isinstance(recipe.get("model"), Mapping) else {}
    return parse_expand(spec["expand"]) if spec.get("expand") else {}


def rebuild(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Give a freshly built model the structure ``record`` describes (before a strict load)."""
    if record.get("deploy"):
        return deploy(model, shift=record.get("shift", "slice"))
    if record.get("expand"):
        return expand(model, record["expand"], **{k: v for k, v in record.items() if k != "expand"})
    return model


def inplace_ops(model: nn.Module, *inputs: torch.Tensor) -> list[str]:
    """ATen ops that mutate a tensor during ``model(*inputs)`` (what 'no in-place ops' is checked with)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    found: list[str] = []

    class _Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func._schema.is_mutable:
                found.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), _Watch():
        model(*inputs)
    return sorted(set(found))


def load(spec: "ModelSpec") -> nn.Module:
    """A float model from any checkpoint short of int8: plain, expanded or deployed (the structure recorded
    in the checkpoint, or in ``spec.structure``, is rebuilt before the strict load)."""
    from ..models import (ModelSpec, build, extract_state_dict, is_edgesr_checkpoint, load_state_dict_strict,
                          read_checkpoint, resolve_weights, unwrap)

    ckpt = read_checkpoint(resolve_weights(spec)) if spec.weights is not None else None
    record = dict(spec.structure or {})
    if ckpt is not None and is_edgesr_checkpoint(ckpt):
        record = record or transform_of(ckpt)
    if not record:
        return build(spec)
    bare = spec.replace(weights=None, structure=None)
    if ckpt is not None and is_edgesr_checkpoint(ckpt):
        recorded = ckpt.get("spec") if isinstance(ckpt.get("spec"), dict) else {}
        if not bare.kwargs:
            bare.kwargs = dict(recorded.get("kwargs") or ckpt.get("config") or {})
        if recorded.get("input_range") and bare.input_range == 1.0:
            bare.input_range = float(recorded["input_range"])
    torch.manual_seed(0)
    model = build(bare)
    net = unwrap(model)[0]
    rebuild(net, record)
    if model is not net:
        _set_record(model, record_of(net))
    if ckpt is not None:
        state = extract_state_dict(ckpt, spec.param_key, source=str(spec.weights))
        load_state_dict_strict(net, state, f"{bare.label} x{bare.scale}", str(spec.weights))
    model.edgesr_spec = ModelSpec.from_json({**bare.to_json(), "weights": spec.weights, "structure": record})
    return model.eval()
