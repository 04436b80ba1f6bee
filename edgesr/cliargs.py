"""argparse pieces every verb shares (a leaf module: the stages' ``command.py`` files and ``cli.py`` import it,
it imports nothing heavy, so ``edgesr --help`` never loads torch)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .errors import one_line

__all__ = ["positive_int", "nonneg_int", "add_model_args", "model_spec", "check_output_path", "write_json",
           "usage_error", "one_line", "spec_flags"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--model-kwargs is not valid JSON ({exc.msg} at column {exc.colno})") \
            from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-kwargs must be a JSON object, e.g. '{\"n_feats\": 48}'")
    return value


def _input_range(text: str) -> float:
    if text not in ("1", "255", "1.0", "255.0"):
        raise argparse.ArgumentTypeError(f"expected 1 or 255, got {text!r}")
    return float(text)


def add_model_args(p: argparse.ArgumentParser, weights_help: str | None = None, required: bool = True) -> None:
    """--model/--scale/--weights/--param-key/--model-kwargs/--input-range, the same on every verb."""
    p.add_argument("--model", required=False, default=None,
                   help="a registered name (`edgesr models`), path/to/file.py:NAME or package.module:NAME "
                        "(a class or factory), or 'spandrel'; omit it to detect a registry model from --weights")
    p.add_argument("--scale", type=int, default=None, choices=(2, 3, 4),
                   help="upscaling factor (checked by one probe forward for networks outside the registry)")
    p.add_argument("--weights", default=None,
                   help=weights_help or "weights file (raw state_dict, BasicSR params/params_ema, edgesr "
                                        "checkpoint) or 'zoo'")
    p.add_argument("--param-key", default=None,
                   help="entry of a BasicSR file to load (default: params_ema if present, else params)")
    p.add_argument("--model-kwargs", type=_json_object, default=None, metavar="JSON",
                   help="keyword arguments for the model's class or factory, as a JSON object")
    p.add_argument("--input-range", type=_input_range, default=1.0, metavar="{1,255}",
                   help="the value range the network takes and returns (255 for many published networks; "
                        "edgesr scales in and out)")
    p.set_defaults(_model_required=required)


def model_spec(args: argparse.Namespace) -> Any:
    """The ModelSpec the model flags describe (registry models need --scale; --weights alone is detected)."""
    from .models import ModelSpec, detect_registry_model, kind_of

    if args.model is None:
        if not args.weights or args.weights == "zoo":
            raise usage_error("--model is required (or --weights FILE of a registry architecture)")
        spec = detect_registry_model(args.weights, args.param_key, args.scale)
        if args.scale not in (None, spec.scale):
            raise usage_error(f"{args.weights} is a {spec.model} x{spec.scale} checkpoint, not x{args.scale}")
        spec.input_range = args.input_range if args.input_range != 1.0 else spec.input_range
        return spec
    if kind_of(args.model) == "registry" and args.scale is None:
        raise usage_error(f"--scale is required for {args.model}")
    return ModelSpec(args.model, args.scale, weights=args.weights, param_key=args.param_key,
                     kwargs=dict(args.model_kwargs or {}), input_range=args.input_range)


def spec_flags(spec: Any) -> list[str]:
    """The CLI flags that rebuild ``spec`` (for the commands edgesr prints)."""
    parts = ["--model", spec.model]
    if spec.scale:
        parts += ["--scale", str(spec.scale)]
    if spec.weights:
        parts += ["--weights", str(spec.weights)]
    if spec.param_key:
        parts += ["--param-key", spec.param_key]
    if spec.kwargs:
        parts += ["--model-kwargs", json.dumps(spec.kwargs, separators=(",", ":"))]
    if spec.input_range != 1:
        parts += ["--input-range", f"{spec.input_range:g}"]
    return parts


def usage_error(message: str) -> Exception:
    from .errors import UsageError

    return UsageError(message)


def check_output_path(path: str | None) -> None:
    """Fail before the work, not after it, when an output cannot be written."""
    if not path:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise usage_error(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise usage_error(f"output folder is not writable: {parent}")


def write_json(path: str | Path, obj: object) -> None:
    from .io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True, default=str) + "\n")

