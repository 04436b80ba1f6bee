"""Plain functions from a PyTorch model to an on-device artifact (ExecuTorch, TFLite, Core ML, ONNX).

``export(model, target, precision, input_size, out, ref=...)`` writes the artifact atomically, its sidecar
``out.json`` (what ``edgesr check`` needs) and, for ExecuTorch, a delegation report and a BundledProgram.
Heavy libraries are imported inside the functions: importing this module costs only torch.

int8 plugs in through ``quantized=``: the PT2E-converted graph module that ``edgesr.quantize`` produces for
the target. This module never quantizes by itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import EdgesrError, one_line
from ..io_utils import atomic_path, atomic_write_bytes, atomic_write_text
from ..models import (ModelSpec, build, describe, min_size, names as names_of_registry, resolve_weights,
                      save_checkpoint, scale_of, size_multiple, spec_of, unwrap)
from ..reparam.forms import applicable_rewrites, export_friendly, for_target, fp16_safe_norms
from ..reparam.hazards import explain_export_failure, tracking_modules
from ..versions import versions
from ..targets import CALIBRATED
from .runtimes import litert_delegation
from .spec import (INPUT_NAME, OUTPUT_NAME, ArtifactInfo, ExportError, TargetConfig, read_sidecar, readable,
                   resolve_beside, sha256_of, target_config, write_sidecar)

SEED = 0


@dataclass
class ModelRef:
    """How to rebuild the PyTorch model an artifact came from (older API: a registry name; prefer passing the
    model alone, whose spec travels with it)."""

    name: str
    scale: int
    weights: str | None = None       # a weights file, "zoo", or None (then export saves the weights it used)
    param_key: str | None = None

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.scale, weights=self.weights, param_key=self.param_key)

    def build(self) -> nn.Module:
        return build(self.spec())


# --------------------------------------------------------------------------------- checks
def required_multiple(model: nn.Module) -> int:
    """Input sides must be multiples of this for an exact, delegated export (the model's ``size_multiple``)."""
    return size_multiple(model)


def check_input_size(model: nn.Module, input_size: tuple[int, int], name: str | None = None) -> None:
    h, w = input_size
    name = name or describe(spec_of(model))
    least = min_size(model)
    if h < least or w < least:
        raise ExportError(f"{name} needs inputs of at least {least}x{least}, got --input-size {h}x{w}")
    mult = required_multiple(model)
    if h % mult or w % mult:
        up = (-(-h // mult) * mult, -(-w // mult) * mult)
        raise ExportError(f"{name} exports need H and W multiples of {mult} (its size_multiple: exact and "
                          f"fully delegated), got {h}x{w}; use {up[0]}x{up[1]} and let check pad/crop")


def check_request(cfg: TargetConfig, precision: str, out: str | Path, layout: str) -> None:
    if precision not in cfg.precisions:
        raise ExportError(f"target {cfg.target} supports {', '.join(cfg.precisions)}, not {precision}")
    if Path(out).suffix != cfg.suffix:
        raise ExportError(f"a {cfg.target} artifact must be named *{cfg.suffix}, got {Path(out).name}")
    if layout != "nchw" and cfg.target != "tflite":
        raise ExportError(f"--layout {layout} is only available for tflite (other targets take NCHW)")
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise ExportError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output folder is not writable: {parent}")


def example_input(input_size: tuple[int, int], seed: int = SEED) -> torch.Tensor:
    """The fixed input used for lowering, the bundled program and parity checks."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *input_size, generator=g)


# --------------------------------------------------------------------------------- export
def export(model: nn.Module, target: str | Path, precision: str, input_size: tuple[int, int], out: str | Path,
           *, quantized: nn.Module | None = None, ref: ModelRef | None = None, layout: str | None = None,
           rewrite: bool = True, command: str | None = None,
           calibration: Sequence[torch.Tensor] | None = None, reuse: Sequence[str | Path] = ()) -> ArtifactInfo:
    """Write ``out`` (+ ``out.json`` sidecar) for ``target`` at a fixed ``input_size`` (H, W), batch 1.

    ``model`` is the fp32 eval model (the reference ``check`` compares against), any ``nn.Module`` taking
    [0, 1] RGB; its spec (``edgesr.models.spec_of``) goes into the sidecar. For ``precision="int8"`` pass
    ``quantized`` (the fake-quant model from ``edgesr.quantize`` for this target), or the quantized model as
    ``model``. A network written for 0-255 keeps that convention in fp32/fp16 artifacts (recorded in the
    sidecar); int8 artifacts take [0, 1] (the scaling is inside the quantized graph).

    ``precision="int16x8"`` (LiteRT: int16 activations, int8 weights) quantizes the fp32 ``.tflite`` with
    ai-edge-quantizer, calibrated on ``calibration`` (LR tensors in [0, 1], fitted to ``input_size``).

    ``reuse``: artifacts exported before (e.g. the int8 search's timed finalists); one lowered from the same graph,
    weights and settings (its sidecar's ``source_sha256``) is copied instead of lowered again: an ExecuTorch int8
    lowering takes about a minute on 2 cores.
    """
    if getattr(model, "quantized", False) and quantized is None:
        quantized = model
    if quantized is not None and model is quantized:
        model = quantized
    spec = ref.spec() if ref is not None else spec_of(model)
    cfg = target_config(target)
    layout = layout or cfg.layout
    check_request(cfg, precision, out, layout)
    check_input_size(model, input_size, describe(spec))
    if precision == "int8" and quantized is None:
        raise ExportError("int8 export needs the quantized model from edgesr.quantize (quantized=...)")
    if quantized is not None and precision != "int8":
        raise ExportError("quantized= is only meaningful with precision int8")
    if precision == "int16x8" and not calibration:
        raise ExportError("int16x8 export needs calibration images (calibration=[LR tensors], CLI: --data DIR)")
    if quantized is not None and getattr(quantized, "target", None) != cfg.target:
        raise ExportError(f"the quantized model was made for target {getattr(quantized, 'target', '?')!r}, "
                          f"not {cfg.target!r}: run `edgesr quantize --target {cfg.target}` first")
    out = Path(out)
    model = model.eval()
    x = example_input(input_size)
    net, input_range = unwrap(model) if quantized is None else (model, 1.0)
    x_net = x * input_range

    names = applicable_rewrites(net) if rewrite else []
    friendly = export_friendly(net, names) if rewrite else net
    if rewrite and quantized is None:
        names += [f"for_target:{cfg.target}:{p}" for p in for_target(friendly, cfg.target)]
    if precision == "fp16" and quantized is None:
        friendly = copy.deepcopy(friendly) if friendly is net else friendly
        if fp16_safe_norms(friendly, x_net):
            names = [*names, "fp16_safe_norms"]
    if quantized is not None:  # the int8 graph was captured from the export-friendly form already
        model, friendly = quantized, quantized.graph
    with torch.no_grad():
        diff = float((friendly(x_net) - net(x_net)).abs().max() / input_range) if quantized is None else 0.0
    if diff > 1e-4:
        raise ExportError(f"internal: export rewrites changed the output by {diff:.2e} (> 1e-4)")

    info = ArtifactInfo(artifact=out.name, target=cfg.target, precision=precision, model=spec.label,
                        scale=int(spec.scale or scale_of(model)), input_size=list(input_size), layout=layout,
                        param_key=spec.param_key, spec=spec.replace(weights=None).to_json(),
                        input_range=input_range,
                        rewrites=names, rewrite_max_abs_diff=diff, target_config=vars(cfg).copy(),
                        versions=_versions(cfg.target), command=command,
                        io_dtype="float16" if (precision == "fp16" and cfg.target == "executorch") else "float32")
    source = friendly
    info.source_sha256 = _source_sha256(source, info, calibration)
    with tracking_modules(source) as running:
        try:
            if _copy_earlier(reuse, out, info):
                pass
            elif cfg.target == "executorch":
                _export_executorch(source, model if quantized is not None else net, x_net, precision, out, info,
                                   bundled=cfg.bundled_program)
            elif cfg.target == "tflite" and precision == "int16x8":
                _export_tflite_int16x8(source, x_net, out, layout, [c * input_range for c in calibration or []])
                _record_delegation(out, info, litert_delegation(out))
            elif cfg.target == "tflite":
                _export_tflite(source, x_net, out, layout, quantized)
                _record_delegation(out, info, litert_delegation(out))
            elif cfg.target == "coreml":
                _export_coreml(source, x_net, precision, out, cfg)
            elif cfg.target == "onnx":
                _export_onnx(source, x_net, out, cfg)
        except (EdgesrError, KeyboardInterrupt):
            raise
        except Exception as exc:  # code edgesr did not write: the op, the module, what to change
            if spec.model in names_of_registry():
                raise
            raise explain_export_failure(exc, source, f"{cfg.target} export", running.deepest or None) from None
    info.weights, info.weights_sha256 = _record_weights(model, spec, out)
    write_sidecar(out, info)
    return info


def export_by_name(name: str, scale: int | None, target: str | Path, precision: str, input_size: tuple[int, int],
                   out: str | Path, *, weights: str | None = None, param_key: str | None = None,
                   layout: str | None = None, command: str | None = None, quantized: str | None = None,
                   spec: ModelSpec | None = None, calibration: Sequence[Any] | None = None) -> ArtifactInfo:
    """Build the model of a spec (registry name or user code; seeded init when there are no weights) and
    :func:`export` it; int8 takes the checkpoint from ``edgesr quantize`` (``quantized``); int16x8 calibrates on
    ``calibration`` (LR tensors, or HR image folders turned into MATLAB-bicubic LR)."""
    from ..quantize.checkpoint import load, load_model

    spec = spec or ModelSpec(name, scale, weights=weights, param_key=param_key)
    cfg = target_config(target)
    check_request(cfg, precision, out, layout or cfg.layout)  # fail before building the model
    torch.manual_seed(SEED)
    model = load_model(spec)
    q = None
    if quantized is not None:
        from ..models import read_checkpoint

        ckpt = read_checkpoint(quantized)
        if ckpt.get("format") != "edgesr-quant":
            raise ExportError(f"--quantized {quantized} is not an int8 checkpoint from `edgesr quantize`")
        q = load(ckpt, spec.replace(weights=None), source=quantized)
    calib = None
    if precision in CALIBRATED:
        calib = calibration_lr(model, calibration, input_size)
    return export(model, target, precision, input_size, out, layout=layout, command=command, quantized=q,
                  calibration=calib)


def calibration_lr(model: nn.Module, calibration: Sequence[Any] | None, input_size: tuple[int, int],
                   count: int = 16) -> list[torch.Tensor]:
    """LR calibration tensors for the export stage's own quantizers: given tensors, or ``count`` images of HR
    folders (default: the photos scikit-image ships), cropped to ``input_size``."""
    from ..data.samples import CALIB_IMAGES, sample_paths
    from ..quantize import QuantConfig, calibration_inputs

    items = list(calibration) if calibration else [str(p) for p in sample_paths(CALIB_IMAGES)]
    cfg = QuantConfig(calib_size=count, calib_patch=max(input_size))
    return [fit_to(t, input_size) for t in calibration_inputs(items, scale_of(model), cfg, size_multiple(model))]


def _source_sha256(source: nn.Module, info: ArtifactInfo, calibration: Sequence[torch.Tensor] | None) -> str:
    """What the artifact is made of: the module's code (a graph's, or its structure), every parameter and
    buffer, the export settings and the toolchain's versions."""
    h = hashlib.sha256(json.dumps([info.target, info.precision, info.input_size, info.layout, info.input_range,
                                   info.rewrites, info.versions, info.io_dtype], sort_keys=True).encode())
    h.update((source.code if isinstance(source, torch.fx.GraphModule) else repr(source)).encode())
    for name, t in [*source.named_parameters(), *source.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for c in calibration or []:
        h.update(c.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _copy_earlier(candidates: Sequence[str | Path], out: Path, info: ArtifactInfo) -> bool:
    """Copy the first of ``candidates`` lowered from the same source (file artifacts and the files their sidecar
    lists, renamed after ``out``); False when none is."""
    import shutil

    for cand in candidates:
        cand = Path(cand)
        try:
            old = read_sidecar(cand)
        except ExportError:
            continue
        if old.source_sha256 != info.source_sha256 or not cand.is_file() or cand.resolve() == out.resolve():
            continue
        with atomic_path(out) as tmp:
            shutil.copyfile(cand, tmp)
        for role, name in old.files.items():
            src = resolve_beside(cand, name)
            if src is None or not src.is_file():
                continue
            dst = out.with_suffix(src.suffix) if src.name == cand.with_suffix(src.suffix).name else \
                Path(str(out) + src.name[len(cand.name):])
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            readable(dst)
            info.files[role] = dst.name
        info.delegation = old.delegation
        readable(out)
        return True
    return False


def _record_weights(model: nn.Module, spec: ModelSpec, out: Path) -> tuple[str, str]:
    """Where ``check`` finds the weights: the given file, or (random init) a copy saved beside the artifact."""
    if getattr(model, "quantized", False):  # int8: check's reference is the fake-quant model, from its checkpoint
        from ..quantize.checkpoint import save_quantized

        src = getattr(model, "source_path", None)
        if src is None or not Path(src).is_file():
            src = readable(save_quantized(model, Path(str(out) + ".int8.pt")))
        path = Path(src).resolve()
        return (path.name if path.parent == out.resolve().parent else str(path)), sha256_of(path)
    if spec.weights is not None:
        path = resolve_weights(spec).resolve()
        return str(path), sha256_of(path)
    path = Path(str(out) + ".weights.pt")
    readable(save_checkpoint(path, model))
    return path.name, sha256_of(path)


def _versions(target: str) -> dict[str, str]:
    return versions(target)


# ---------------------------------------------------------------------------- ExecuTorch
def lower_executorch(source: nn.Module, x: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """torch.export -> XNNPACK partition -> ExecuTorch program manager, plus the delegation report."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(source, (x,))
    one_dequantize_per_reader(ep.graph_module)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    report = delegation_report(edge.exported_program().graph_module)
    return edge.to_executorch(), report


def one_dequantize_per_reader(gm: torch.fx.GraphModule) -> int:
    """Give every reader of a dequantize its own copy (the same op on the same int8 tensor, so the same values).

    XNNPACK's partitioner groups a dequantize with the op that reads it. One dequantize read both by the first
    conv of a residual branch and by the float add that closes the branch puts both in one group with the branch
    between them outside it: "Invalid partition, found dependency cycles" (LAMNet x4 with float adds alone).
    Returns the number of copies made."""
    made = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not str(node.target).startswith("quantized_decomposed.dequantize_per_"):
            continue
        for user in [u for u in node.users if u.op != "output"][1:]:
            with gm.graph.inserting_after(node):
                copy_ = gm.graph.node_copy(node)
            user.replace_input_with(node, copy_)
            made += 1
    if made:
        gm.recompile()
    return made


def delegation_report(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """Delegated vs not, by operator. ``getitem`` (unpacking a delegate's outputs) is not an op and is left
    out of the percentage."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op = {name: {"delegated": b.delegated, "non_delegated": b.non_delegated}
             for name, b in sorted(info.delegation_by_operator.items())}
    ops = {k: v for k, v in by_op.items() if k != "getitem"}
    delegated = sum(v["delegated"] for v in ops.values())
    non = sum(v["non_delegated"] for v in ops.values())
    return {
        "backend": "XnnpackBackend",
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_ops": delegated,
        "non_delegated_ops": non,
        "percent_delegated": round(100.0 * delegated / max(1, delegated + non), 2),
        "not_delegated": dict(sorted(((k, v["non_delegated"]) for k, v in ops.items() if v["non_delegated"]),
                                     key=lambda kv: -kv[1])),
        "by_operator": by_op,
    }


def _record_delegation(out: Path, info: ArtifactInfo, report: dict[str, Any]) -> None:
    """The delegation report beside the artifact (``<artifact>.delegation.json``), its summary in the sidecar."""
    report_path = Path(str(out) + ".delegation.json")
    readable(atomic_write_text(report_path, json.dumps(report, indent=2) + "\n"))
    info.delegation = {k: v for k, v in report.items() if k != "by_operator"}
    info.files.update(delegation=report_path.name)


def _export_executorch(source: nn.Module, reference: nn.Module, x: torch.Tensor, precision: str, out: Path,
                       info: ArtifactInfo, bundled: bool = True) -> None:
    if precision == "fp16":
        source, x_in = copy.deepcopy(source).half(), x.half()
    else:
        x_in = x
    program, report = lower_executorch(source, x_in)
    with atomic_path(out) as tmp:
        tmp.write_bytes(program.buffer)
    _record_delegation(out, info, report)
    if bundled:  # the target's bundled_program switch
        with torch.no_grad():
            expected = reference(x).to(x_in.dtype)
        bpte = out.with_suffix(".bpte")
        readable(atomic_write_bytes(bpte, bundled_program(program, x_in, expected)))
        info.files.update(bundled_program=bpte.name)


def bundled_program(program: Any, x: torch.Tensor, expected: torch.Tensor) -> bytes:
    """A .bpte: the program plus one reference input and the PyTorch output for it (the phone-side check)."""
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    suite = MethodTestSuite("forward", [MethodTestCase([x], [expected])])
    return serialize_from_bundled_program_to_flatbuffer(BundledProgram(program, [suite]))


# -------------------------------------------------------------------------------- TFLite
def _export_tflite(source: nn.Module, x: torch.Tensor, out: Path, layout: str, quantized: Any = None) -> None:
    import litert_torch

    kwargs: dict[str, Any] = {}
    if quantized is not None:  # litert folds the quantize/dequantize pairs into int8 TFLite kernels
        from litert_torch.quantize.quant_config import QuantConfig as LiteRTQuantConfig

        from ..config import from_dict
        from ..quantize.config import QuantConfig
        from ..quantize.quantizers import base_quantizer

        qcfg = from_dict(QuantConfig, quantized.config)
        kwargs["quant_config"] = LiteRTQuantConfig(pt2e_quantizer=base_quantizer("tflite", qcfg, False))

    module, example = source, x
    if layout == "nhwc":
        module = litert_torch.to_channel_last_io(source, args=[0], outputs=[0])
        example = x.permute(0, 2, 3, 1).contiguous()
    if quantized is None:
        module = module.eval()  # an exported int8 graph has no train/eval switch (and needs none)
    edge = litert_torch.convert(module, (example,), **kwargs)
    with atomic_path(out) as tmp:
        edge.export(str(tmp))


def fit_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An LR tensor at exactly ``size`` (H, W): centre-cropped where larger, edge-replicated where smaller."""
    import torch.nn.functional as F

    x = x if x.dim() == 4 else x.unsqueeze(0)
    h, w = x.shape[-2:]
    th, tw = size
    y0, x0 = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    x = x[..., y0:y0 + th, x0:x0 + tw]
    ph, pw = th - x.shape[-2], tw - x.shape[-1]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x.contiguous()


def quantize_tflite(fp32_path: str | Path, out: str | Path, inputs: Sequence[torch.Tensor], activation_bits: int = 16,
                    layout: str = "nchw") -> None:
    """ai-edge-quantizer's static recipe on a float ``.tflite``: int8 weights, ``activation_bits`` (16: int16x8,
    8: its default int8 recipe) activations, min/max calibrated on ``inputs`` (at the model's input size)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(fp32_path)).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    arrays = [np.ascontiguousarray((t.permute(0, 2, 3, 1) if layout == "nhwc" else t).numpy(), np.float32)
              for t in inputs]
    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai16() if activation_bits == 16 else recipe.static_wi8_ai8())
    try:
        ranges = qt.calibrate({key: [{name: a} for a in arrays]})
    except RuntimeError as e:  # its interpreter keeps every intermediate tensor: allocation fails on big inputs
        h, w = arrays[0].shape[1:3] if layout == "nhwc" else arrays[0].shape[2:4]
        raise ExportError(f"ai-edge-quantizer could not calibrate the model at {h}x{w} ({one_line(e)}): its "
                          f"calibration keeps every intermediate tensor, {_tensor_bytes(fp32_path) / 2**30:.1f} GiB "
                          "there; use a smaller input size") from None
    result = qt.quantize(ranges, enable_progress_report=False)
    with atomic_path(Path(out)) as tmp:
        result.export_model(str(tmp), overwrite=True)


def _tensor_bytes(path: str | Path) -> int:
    """The bytes of every tensor of a float ``.tflite`` (what an interpreter that keeps them all allocates)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    return sum(int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
               for t in Interpreter(model_path=str(path)).get_tensor_details())


def _export_tflite_int16x8(source: nn.Module, x: torch.Tensor, out: Path, layout: str,
                           calibration: Sequence[torch.Tensor]) -> None:
    import tempfile

    size = (int(x.shape[-2]), int(x.shape[-1]))
    with tempfile.TemporaryDirectory(prefix="edgesr-16x8-") as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        _export_tflite(source, x, fp32, layout)
        quantize_tflite(fp32, out, [fit_to(c, size) for c in calibration], 16, layout)


# -------------------------------------------------------------------------------- Core ML
def _export_coreml(source: nn.Module, x: torch.Tensor, precision: str, out: Path, cfg: TargetConfig) -> None:
    import coremltools as ct
    import numpy as np

    ep = torch.export.export(source, (x,)).run_decompositions({})
    ml = ct.convert(
        ep, convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=getattr(ct.target, cfg.minimum_deployment_target or "iOS17"),
        compute_units=getattr(ct.ComputeUnit, cfg.compute_units or "ALL"),
        inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(x.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
    )
    with atomic_path(out, directory=True) as tmp:
        ml.save(str(tmp))


# ----------------------------------------------------------------------------------- ONNX
def _export_onnx(source: nn.Module, x: torch.Tensor, out: Path, cfg: TargetConfig) -> None:
    program = torch.onnx.export(source, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=cfg.opset, verbose=False)
    with atomic_path(out) as tmp:
        program.save(str(tmp))


__all__ = ["ModelRef", "export", "export_by_name", "lower_executorch", "delegation_report", "bundled_program",
           "check_input_size", "required_multiple", "example_input", "atomic_path", "SEED"]
