"""Which network, from where: one :class:`ModelSpec` travels through every stage.

A spec names a registry model (``safmn``), a user's code (``nets/my_sr.py:MySR`` or ``pkg.module:make_net``,
a class or a factory, with ``kwargs``), or ``spandrel`` (the architecture detected from the checkpoint by
the spandrel library). :func:`build` turns it into an eval-mode ``nn.Module`` taking and returning RGB in
[0, 1] — networks written for 0-255 (``input_range=255``) are wrapped by :class:`InputRange`, whose
``net`` is what exporters lower, so an artifact keeps the network's own convention. Every built model
carries its spec (``model.edgesr_spec``), which is what checkpoints and artifact sidecars record.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError, UsageError
from ..io_utils import sha256_of
from ..zoo import zoo_path
from .registry import SCALES, factory, names
from .checkpoint import extract_state_dict, is_edgesr_checkpoint, load_state_dict_strict, read_checkpoint

__all__ = ["ModelSpec", "InputRange", "build", "spec_of", "scale_of", "unwrap", "input_range_of", "kind_of",
           "probe_sizes", "size_multiple", "min_size", "describe", "detect_registry_model"]

SPANDREL = "spandrel"


@dataclass
class ModelSpec:
    """A network and its weights, as every stage and file records it."""

    model: str                                  # registry name | file.py:NAME | package.module:NAME | spandrel
    scale: int | None = None                    # None: found by one probe forward (user code, spandrel)
    weights: str | None = None                  # file, "zoo", or None (initial weights)
    param_key: str | None = None                # BasicSR entry to load (default params_ema, else params)
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_range: float = 1.0                    # 1: the network takes [0, 1]; 255: it takes [0, 255]
    structure: dict[str, Any] | None = None     # reparameterized structure (see edgesr.reparam.rebuild)
    source_sha256: str | None = None            # sha256 of the user's code file, recorded when built

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        """Short name for tables and file names (``MySR`` for ``nets/my_sr.py:MySR``)."""
        return self.model.rpartition(":")[2] if ":" in self.model else self.model


def kind_of(model: str) -> str:
    """``registry``, ``file``, ``module`` or ``spandrel``; a one-line error for anything else."""
    if model == SPANDREL:
        return "spandrel"
    if ":" in model:
        where, _, name = model.rpartition(":")
        if not where or not name.isidentifier():
            raise UsageError(f"--model {model!r}: expected path/to/file.py:NAME or package.module:NAME")
        return "file" if where.endswith(".py") or "/" in where or "\\" in where else "module"
    if model in names():
        return "registry"
    raise UsageError(f"unknown model {model!r}; known: {', '.join(names())}, or path/to/file.py:NAME, "
                     "package.module:NAME, spandrel")


# ----------------------------------------------------------------------------------- user code
def _load_callable(spec: ModelSpec) -> tuple[Callable[..., Any], str | None]:
    where, _, name = spec.model.rpartition(":")
    digest = None
    if kind_of(spec.model) == "file":
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"--model {spec.model}: file not found: {path}")
        digest = sha256_of(path)
        if spec.source_sha256 and spec.source_sha256 != digest:
            raise CheckpointError(f"{path} changed since this file was written (sha256 differs); the network it "
                                  "recorded may not be the one defined there now")
        mod_name = f"edgesr_user_{digest[:12]}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader = importlib.util.spec_from_file_location(mod_name, path)
            if loader is None or loader.loader is None:
                raise UsageError(f"--model {spec.model}: cannot import {path}")
            module = importlib.util.module_from_spec(loader)
            sys.modules[mod_name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as exc:  # the user's file: say where it failed, in one line
                del sys.modules[mod_name]
                raise UsageError(f"--model {spec.model}: importing {path} failed: {type(exc).__name__}: "
                                 f"{_first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise UsageError(f"--model {spec.model}: cannot import {where}: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None
    obj = getattr(module, name, None)
    if obj is None or not callable(obj):
        have = sorted(k for k, v in vars(module).items()
                      if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v)))
        raise UsageError(f"--model {spec.model}: {where} defines no class or function {name!r} "
                         f"(it has: {', '.join(have[:8]) or 'nothing callable'})")
    return obj, digest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _call_with_scale(fn: Callable[..., Any], scale: int | None, kwargs: dict[str, Any], label: str) -> nn.Module:
    """Pass the scale under the name the network uses (scale / upscale / upscale_factor / upsampling) unless
    the kwargs already set it."""
    kw = dict(kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if scale is not None:
        for key in ("scale", "upscale", "upscale_factor", "upsampling", "sr_ratio"):
            if key in params and key not in kw:
                kw[key] = scale
                break
    try:
        net = fn(**kw)
    except TypeError as exc:
        raise UsageError(f"--model {label}: {_first_line(exc)} (pass arguments with --model-kwargs JSON)") from None
    if not isinstance(net, nn.Module):
        raise UsageError(f"--model {label} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


# --------------------------------------------------------------------------------- input range
class InputRange(nn.Module):
    """A network that takes and returns RGB in [0, ``input_range``], seen as one in [0, 1]."""

    def __init__(self, net: nn.Module, input_range: float) -> None:
        super().__init__()
        self.net, self.input_range = net, float(input_range)
        for attr in ("min_size", "size_multiple"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.input_range) / self.input_range


def unwrap(model: nn.Module) -> tuple[nn.Module, float]:
    """(the network as its authors wrote it, its input range): what exporters lower."""
    if isinstance(model, InputRange):
        return model.net, model.input_range
    return model, 1.0


def input_range_of(model: nn.Module) -> float:
    return unwrap(model)[1]


# ------------------------------------------------------------------------------------- build
def build(spec: ModelSpec | str, scale: int | None = None, **fields: Any) -> nn.Module:
    """The float network ``spec`` describes, weights loaded strictly, eval mode, [0, 1] in and out.

    ``build("safmn", 4, weights="zoo")`` is shorthand for ``build(ModelSpec("safmn", 4, weights="zoo"))``.
    Checkpoints of a reparameterized structure load with ``edgesr.reparam.load``; int8 checkpoints with
    ``edgesr.quantize.load``.
    """
    if isinstance(spec, str):
        spec = ModelSpec(spec, scale, **fields)
    if spec.input_range not in (1, 1.0, 255, 255.0):
        raise UsageError(f"--input-range must be 1 or 255, got {spec.input_range:g}")
    kind = kind_of(spec.model)
    ckpt = None
    if spec.weights is not None and kind != "spandrel":
        ckpt = read_checkpoint(resolve_weights(spec))
        _refuse_other_formats(ckpt, spec)
    net = _construct(spec, kind)
    if spec.structure:
        raise CheckpointError(f"{spec.model}: the spec records a reparameterized structure; build it with "
                              "edgesr.reparam.load")
    if ckpt is not None:
        state = extract_state_dict(ckpt, spec.param_key, source=str(spec.weights))
        load_state_dict_strict(net, state, describe(spec), str(spec.weights))
    return finish(net, spec, kind)


def _construct(spec: ModelSpec, kind: str) -> nn.Module:
    """The network with its initial weights (seeded by the caller)."""
    if kind == "registry":
        if spec.scale is None:
            raise UsageError(f"{spec.model}: --scale is required for registry models")
        fn = factory(spec.model)
        supported = getattr(fn, "scales", SCALES)
        if spec.scale not in supported:
            raise UsageError(f"{spec.model} supports scales {', '.join(map(str, supported))}, got {spec.scale}")
        return fn(scale=spec.scale, **spec.kwargs)
    if kind == "spandrel":
        from .from_checkpoint import load_with_spandrel

        if spec.weights is None:
            raise UsageError("--model spandrel needs --weights (the architecture is read from the checkpoint)")
        net, found, _ = load_with_spandrel(resolve_weights(spec))
        if spec.scale is not None and spec.scale != found:
            raise UsageError(f"{spec.weights} is a x{found} network, not x{spec.scale}")
        spec.scale = found
        return net
    fn, digest = _load_callable(spec)
    spec.source_sha256 = digest
    return _call_with_scale(fn, spec.scale, spec.kwargs, spec.model)


def finish(net: nn.Module, spec: ModelSpec, kind: str | None = None) -> nn.Module:
    """Wrap the input range, check the scale by one probe forward (user code), record the spec, eval mode."""
    kind = kind or kind_of(spec.model)
    model = InputRange(net, spec.input_range) if spec.input_range != 1 else net
    if kind != "registry":
        found = probe_scale(model, spec.model)
        if spec.scale is not None and found != spec.scale:
            raise UsageError(f"--model {spec.model} upscales x{found}, not x{spec.scale} as --scale says")
        spec.scale = found
        probe_sizes(model, found)  # valid input sizes, unless the network declares them
    model.edgesr_spec = spec
    return model.eval()


def resolve_weights(spec: ModelSpec) -> Path:
    """``"zoo"`` means the weights edgesr ships for this registry name and scale; anything else is a path."""
    if str(spec.weights) == "zoo":
        if kind_of(spec.model) != "registry" or spec.scale is None:
            raise UsageError("--weights zoo needs a registry model and --scale")
        return zoo_path(spec.model, spec.scale)
    return Path(str(spec.weights))


def _refuse_other_formats(ckpt: dict[str, Any], spec: ModelSpec) -> None:
    if ckpt.get("format") == "edgesr-quant":
        raise CheckpointError(f"{spec.weights} is an int8 checkpoint: load it with edgesr.quantize.load "
                              "(the CLI does this by itself)")
    if is_edgesr_checkpoint(ckpt):
        if ckpt.get("reparam") or (isinstance(ckpt.get("recipe"), dict)
                                   and isinstance(ckpt["recipe"].get("model"), dict)
                                   and ckpt["recipe"]["model"].get("expand")):
            raise CheckpointError(f"{spec.weights} holds a reparameterized structure: load it with "
                                  "edgesr.reparam.load (the CLI does this by itself)")
        recorded = ckpt.get("spec") or {}
        name = recorded.get("model") or ckpt.get("model")
        if name not in (None, spec.model) and not (":" in spec.model and ":" in str(name)):
            raise CheckpointError(f"{spec.weights} is an edgesr checkpoint of {name!r}, not {spec.model!r}")
        if ckpt.get("scale") not in (None, spec.scale) and spec.scale is not None:
            raise CheckpointError(f"{spec.weights} is an edgesr checkpoint for x{ckpt['scale']}, not x{spec.scale}")
        config = ckpt.get("config") or {}
        if config and not spec.kwargs:
            spec.kwargs = dict(config)


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec a model was built from; a hand-made module gets one naming its class (not rebuildable)."""
    spec = getattr(model, "edgesr_spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    return ModelSpec(f"<{type(model).__name__}>", getattr(model, "scale", None) or getattr(model, "upscale", None))


def scale_of(model: nn.Module) -> int:
    spec = getattr(model, "edgesr_spec", None)
    scale = spec.scale if isinstance(spec, ModelSpec) else None
    scale = scale or getattr(unwrap(model)[0], "scale", None) or getattr(unwrap(model)[0], "upscale", None)
    if scale is None:
        scale = probe_scale(model, type(model).__name__)
    return int(scale)


def describe(spec: ModelSpec) -> str:
    return f"{spec.label} x{spec.scale}" if spec.scale else spec.label


# ----------------------------------------------------------------------------------- probing
def _side_for_probe(model: nn.Module) -> int:
    mult = int(getattr(model, "size_multiple", 1) or 1)
    side = max(int(getattr(model, "min_size", 1) or 1), 16)
    return -(-side // mult) * mult


@torch.no_grad()
def probe_scale(model: nn.Module, label: str) -> int:
    """One forward on a small input: output side / input side, checked to be a whole factor in H and W."""
    side = _side_for_probe(model)
    was = model.training
    model.eval()
    try:
        y = model(torch.rand(1, 3, side, side))
    except Exception as exc:
        raise UsageError(f"--model {label}: a probe forward on 1x3x{side}x{side} failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    finally:
        model.train(was)
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[1] != 3:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UsageError(f"--model {label}: expected an N×3×H×W RGB output, got {shape}")
    sh, sw = y.shape[2] / side, y.shape[3] / side
    if sh != sw or sh != int(sh) or sh < 1:
        raise UsageError(f"--model {label} maps {side}x{side} to {y.shape[2]}x{y.shape[3]}: not a whole upscaling "
                         "factor")
    return int(sh)


@torch.no_grad()
def probe_sizes(model: nn.Module, scale: int, largest: int = 32) -> dict[str, int]:
    """``min_size`` / ``size_multiple`` of a network that does not declare them, found by forwards at sides
    1..``largest``: the smallest multiple m (1, 2, 4, 8, 16, 32) such that every tested side that is a multiple
    of m, from the smallest working one, gives scale × the input. Recorded on the model."""
    declared = {a: int(getattr(model, a)) for a in ("min_size", "size_multiple") if hasattr(model, a)}
    if len(declared) == 2:
        return declared
    ok: dict[int, bool] = {}
    was = model.training
    model.eval()
    for side in range(1, largest + 1):
        try:
            y = model(torch.rand(1, 3, side, side + 1 if side > 1 else side))
            ok[side] = tuple(y.shape[2:]) == (side * scale, (side + 1 if side > 1 else side) * scale)
        except Exception:  # noqa: BLE001 - a failing size is what we are looking for
            ok[side] = False
    model.train(was)
    found = None
    for mult in (1, 2, 4, 8, 16, 32):
        sides = [s for s in ok if s % mult == 0]
        good = [s for s in sides if ok[s]]
        if good and all(ok[s] for s in sides if s >= good[0]):
            found = {"min_size": good[0], "size_multiple": mult}
            break
    if found is None:
        raise UsageError(f"no input size from 1 to {largest} gives x{scale} outputs consistently; declare "
                         "min_size / size_multiple on the model")
    found = {**found, **declared}
    for k, v in found.items():
        setattr(model, k, v)
    return found


def size_multiple(model: nn.Module) -> int:
    return int(getattr(model, "size_multiple", 1) or 1)


def min_size(model: nn.Module) -> int:
    return int(getattr(model, "min_size", 1) or 1)


# ------------------------------------------------------------------------------ known checkpoints
def detect_registry_model(weights: str | Path, param_key: str | None = None,
                          scale_hint: int | None = None) -> ModelSpec:
    """The registry model and scale whose state_dict a checkpoint fits exactly (``--weights`` alone)."""
    ckpt = read_checkpoint(weights)
    if ckpt.get("format") == "edgesr-quant" or is_edgesr_checkpoint(ckpt):
        recorded = ckpt.get("spec")
        if isinstance(recorded, dict):
            return ModelSpec.from_json({**recorded, "weights": str(weights)})
        if ckpt.get("model"):
            return ModelSpec(ckpt["model"], ckpt.get("scale"), weights=str(weights))
    state = extract_state_dict(ckpt, param_key, source=str(weights))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    fits = []
    for name in names():
        for scale in getattr(factory(name), "scales", SCALES):
            with torch.device("meta"):
                try:
                    own = factory(name)(scale=scale).state_dict()
                except Exception:  # noqa: BLE001 - a family that cannot build on meta is skipped
                    continue
            if {k: tuple(v.shape) for k, v in own.items()} == shapes:
                fits.append((name, scale))
    if len(fits) == 1 or (fits and scale_hint in {s for _, s in fits}):
        name, scale = next(f for f in fits if scale_hint in (None, f[1]))
        return ModelSpec(name, scale, weights=str(weights), param_key=param_key)
    if fits:
        raise CheckpointError(f"{weights} fits {', '.join(f'{n} x{s}' for n, s in fits)} (the same tensors at "
                              "several scales): pass --scale")
    raise CheckpointError(f"{weights} fits no registry model (compared {len(names())} families at x2/x3/x4); pass "
                          "--model with the network's code (path/to/file.py:NAME)")

