"""CLI verbs of the export stage: ``export``, ``check``, ``device-script``, ``device-report``.

Only argparse-level imports at module level: ExecuTorch / coremltools / litert-torch take 5-20 s to import
and are loaded inside the handlers that need them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..cliargs import add_model_args, check_output_path, model_spec, nonneg_int, positive_int, spec_flags, write_json

from ..targets import CALIBRATED, NAMES as TARGETS, PRECISIONS


def _target(text: str) -> str:
    if text in TARGETS or text.endswith((".yaml", ".yml")):
        return text
    raise argparse.ArgumentTypeError(f"unknown target {text!r} (choose from {', '.join(TARGETS)} or a "
                                     "targets/*.yaml file)")


def _error(message: str) -> Exception:
    from .spec import ExportError

    return ExportError(message)


def _command_line(args: argparse.Namespace, spec: object) -> str:
    """The export command as a user would retype it (rebuilt from the parsed options, not sys.argv)."""
    parts = ["edgesr", "export", *spec_flags(spec)]
    if args.quantized:
        parts += ["--quantized", str(args.quantized)]
    parts += ["--target", args.target, "--precision", args.precision, "--input-size", args.input_size,
              *(["--data", *map(str, args.data)] if args.data else []),
              *(["--layout", args.layout] if args.layout else []), "--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


# ------------------------------------------------------------------------------------ export
def cmd_export(args: argparse.Namespace) -> int:
    from .spec import parse_input_size, target_config

    size = parse_input_size(args.input_size)
    cfg = target_config(args.target)
    if args.precision == "int8" and not args.quantized:
        raise _error("--precision int8 needs --quantized CKPT (make it with `edgesr quantize --target "
                     f"{cfg.target} ...`)")
    if args.quantized and args.precision != "int8":
        raise _error("--quantized is only used with --precision int8")
    if args.precision not in cfg.precisions:
        raise _error(f"target {cfg.target} supports {', '.join(cfg.precisions)}, not {args.precision}")
    from .exporters import export_by_name

    spec = model_spec(args)
    args.model, args.scale = spec.model, spec.scale
    if args.data and args.precision not in CALIBRATED:
        raise _error(f"--data calibrates {', '.join(CALIBRATED)} exports; {args.precision} does not use it")
    info = export_by_name(spec.model, spec.scale, args.target, args.precision, size, args.out, layout=args.layout,
                          command=_command_line(args, spec), quantized=args.quantized, spec=spec,
                          calibration=args.data)
    print(f"wrote {args.out} ({cfg.target} {info.precision}, {info.model} x{info.scale}, input "
          f"{size[0]}x{size[1]}, {info.layout})")
    if info.rewrites:
        print(f"  export rewrites: {', '.join(info.rewrites)} (max |diff| vs eval model {info.rewrite_max_abs_diff:.1e})")
    if info.delegation:
        d = info.delegation
        nd = ", ".join(f"{k} x{v}" for k, v in d["not_delegated"].items()) or "none"
        print(f"  XNNPACK: {d['percent_delegated']:.1f}% of ops delegated in {d['delegated_subgraphs']} "
              f"subgraph(s); not delegated: {nd}")
    for role, name in info.files.items():
        print(f"  {role}: {name}")
    print(f"  sidecar: {args.out}.json")
    return 0


# ------------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_artifact, format_report

    check_output_path(args.json)
    spec = None
    if args.model:  # the network's code moved since export: say where it is now
        from ..models import ModelSpec

        spec = ModelSpec(args.model, kwargs=dict(args.model_kwargs or {}))
    report = check_artifact(args.artifact, args.data, threads=args.threads, runs=args.runs, overlap=args.overlap,
                            memory=not args.no_memory, op_profile=not args.no_op_profile, progress=not args.quiet,
                            spec=spec)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0


# ------------------------------------------------------------------------------------ device
def cmd_device_script(args: argparse.Namespace) -> int:
    import os

    from ..io_utils import atomic_write_text
    from .device import device_script
    from .spec import load_profile

    profile = load_profile(args.profile)
    text = device_script(args.artifact, profile, out_dir=args.device_out)
    if args.out:
        check_output_path(args.out)
        path = atomic_write_text(args.out, text)
        os.chmod(path, 0o755)
        print(f"wrote {args.out}: run it from {Path(args.artifact).resolve().parent} with a phone on adb")
    else:
        sys.stdout.write(text)
    return 0


def cmd_device_report(args: argparse.Namespace) -> int:
    from .check import format_report
    from .device import device_report

    check_output_path(args.json)
    report = device_report(args.outputs, args.artifact)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0


# ---------------------------------------------------------------------------------- parsers
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model to ExecuTorch, TFLite, Core ML or ONNX",
        description="Export a model at a fixed input size (batch 1) to an on-device artifact, written atomically, "
                    "with a sidecar FILE.json (model, weights, size, layout, versions, command) that `edgesr check` "
                    "reads. ExecuTorch also writes FILE.delegation.json (ops XNNPACK did not take) and a "
                    "BundledProgram (.bpte) with a reference input and the PyTorch output for on-phone checks. "
                    "Export-friendly rewrites (exact to float rounding) are applied first.")
    add_model_args(p, "weights file (raw state_dict, BasicSR or edgesr checkpoint) or 'zoo'; without it, a "
                       "seeded random init whose weights are saved beside the artifact")
    p.add_argument("--quantized", default=None, metavar="CKPT",
                   help="int8: the quantized checkpoint from `edgesr quantize` for the same target")
    p.add_argument("--target", required=True, type=_target, metavar="{executorch,tflite,coreml,onnx}",
                   help="runtime target, or a targets/*.yaml file with its settings")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (all targets), fp16 (executorch, coreml), int8 (needs --quantized), int16x8 (tflite: "
                        "int16 activations, int8 weights, ai-edge-quantizer calibrated on --data)")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR",
                   help="int16x8: HR calibration image folders (16 images, MATLAB-bicubic LR; default: the photos "
                        "scikit-image ships)")
    p.add_argument("--input-size", required=True, metavar="HxW",
                   help="fixed LR input size, e.g. 180x320 (SAFMN: multiples of 8)")
    p.add_argument("--layout", choices=("nchw", "nhwc"), default=None,
                   help="tensor layout of the artifact's input/output (default: the target's; nhwc: tflite only)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="artifact path: .pte / .tflite / .mlpackage / .onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "check", help="run an artifact in its runtime: PSNR/SSIM, parity, latency, memory",
        description="Run an exported artifact in its own runtime (ExecuTorch, LiteRT, onnxruntime; Core ML on macOS "
                    "only, elsewhere 'converted, not run' with the MIL op summary) over benchmark images, as "
                    "windows of the artifact's fixed input size (overlapping; small images padded). Reports "
                    "PSNR/SSIM-Y (paper conventions), parity with the PyTorch model it came from (max |diff| per "
                    "window, PSNR of the assembled images), the tiling effect (PyTorch tiled vs whole), latency "
                    "median/p90, peak RSS of a fresh process, per-op times (ETDump / onnxruntime profiler) and "
                    "file size.")
    p.add_argument("artifact", help="an artifact written by `edgesr export` (its sidecar FILE.json beside it)")
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="benchmark folders (as `edgesr eval`); default: scikit-image sample photos")
    p.add_argument("--json", metavar="OUT", help="write the full report here")
    p.add_argument("--threads", type=positive_int, default=None, help="runtime (and torch) CPU threads")
    p.add_argument("--runs", type=positive_int, default=20, help="timed runs for latency (default 20)")
    p.add_argument("--overlap", type=nonneg_int, default=None,
                   help="LR pixels shared by neighbouring windows (default min(32, size/2))")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (a fresh process)")
    p.add_argument("--no-op-profile", action="store_true", help="skip per-op profiling")
    p.add_argument("--quiet", action="store_true", help="no per-image lines")
    p.add_argument("--model", default=None,
                   help="where the network's code is now (path/to/file.py:NAME), if it moved since export; "
                        "default: the spec recorded in the sidecar")
    p.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                   help="with --model: keyword arguments for the class or factory")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "device-script", help="write an adb script that benchmarks an artifact on an Android phone",
        description="Write a bash script that pushes the artifact and the runtime's own tool to an Android phone "
                    "over adb, runs it and pulls the outputs: ExecuTorch executor_runner on the BundledProgram "
                    "(timed iterations, output verified against PyTorch, ETDump); LiteRT benchmark_model with "
                    "--enable_op_profiling=true. Feed the outputs to `edgesr device-report`.")
    p.add_argument("artifact", help="a .pte or .tflite written by `edgesr export`")
    p.add_argument("--out", metavar="SCRIPT", help="write the script here (default: stdout)")
    p.add_argument("--profile", metavar="YAML", help="phone profile, e.g. targets/android_pixel8.yaml")
    p.add_argument("--device-out", default="device-out", metavar="DIR",
                   help="local folder the script pulls outputs into (default device-out)")
    p.set_defaults(func=cmd_device_script)

    p = sub.add_parser(
        "device-report", help="parse phone outputs into the `edgesr check` JSON schema",
        description="Parse what the phone tools wrote (benchmark_model stdout with op profiling, executor_runner "
                    "log, ETDump) into the same JSON schema as `edgesr check`; values a tool does not measure "
                    "are null.")
    p.add_argument("outputs", nargs="+", metavar="OUTPUT_FILE", help="tool logs and/or an ETDump")
    p.add_argument("--artifact", required=True, help="the artifact the outputs belong to")
    p.add_argument("--json", metavar="OUT", help="write the report here")
    p.set_defaults(func=cmd_device_report)
