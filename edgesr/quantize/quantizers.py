"""The target decides the quantizer; everything after annotation (prepare, calibrate, QAT, convert) is shared.

- ``executorch``: XNNPACK's quantizer: int8 per-channel symmetric weights, int8 per-tensor affine activations.
- ``tflite``: litert-torch's PT2E quantizer (the same int8 scheme, annotated the way the TFLite converter
  legalises it), with the source records its add/concat/max-pool annotators need restored
  (``restore_source_fns``: edgesr's dynamic-shape capture does not write them).
- ``coreml``: Core ML's W8A8 scheme (int8 per-channel symmetric weights, int8 activations). coremltools'
  own PT2E ``CoreMLQuantizer`` imports ``torch.ao.quantization.quantizer``, removed in torch 2.13, so edgesr
  annotates with XNNPACK's annotator (the same W8A8 pattern set: conv, add, mul, cat) and ``ct.convert``
  reads the resulting quantize/dequantize pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch.fx import GraphModule, Node

from .config import QuantConfig, check_target

# Per target, bumped when an annotation rule changes what a configuration computes: trials cached by ``--auto``
# under an older rule are then measured again, not reused (absent: the first rule). tflite 2: unclipped exits
# that float readers share.
ANNOTATION_REVISIONS: dict[str, int] = {"tflite": 2}

CONV_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default,
            torch.ops.aten.conv_transpose2d.input}
ADD_OPS = {torch.ops.aten.add.Tensor}
MUL_OPS = {torch.ops.aten.mul.Tensor}
TAIL_OPS = {getattr(torch.ops.aten, n).default for n in ("relu", "relu_", "leaky_relu", "leaky_relu_", "gelu", "silu",
                                                          "sigmoid", "hardtanh", "hardtanh_", "prelu", "pixel_shuffle",
                                                          "clamp")}


def _percentile_observer() -> type:
    from torchao.quantization.pt2e import HistogramObserver

    class PercentileObserver(HistogramObserver):
        """Histogram observer whose range is the [100-p, p] percentiles: clips rare outliers (SR activations
        are heavy-tailed; one bright edge should not cost every other pixel its resolution)."""

        def __init__(self, *args: Any, percentile: float = 99.99, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.percentile = float(percentile)

        @torch.jit.export
        def calculate_qparams(self):  # type: ignore[override]
            hist = self.histogram
            if hist.sum() <= 0 or self.min_val.numel() == 0 or self.min_val == float("inf"):
                return super().calculate_qparams()
            cdf = torch.cumsum(hist, 0) / hist.sum()
            q = (100.0 - self.percentile) / 100.0
            lo_bin = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)))
            hi_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - q, dtype=cdf.dtype)))
            width = (self.max_val - self.min_val) / self.bins
            lo = self.min_val + width * lo_bin
            hi = self.min_val + width * (hi_bin + 1)
            return self._calculate_qparams(torch.minimum(lo, torch.zeros_like(lo)),
                                           torch.maximum(hi, torch.zeros_like(hi)))

    return PercentileObserver


def _activation_ctr(cfg: QuantConfig, qat: bool, eps: float = 2**-12) -> Any:
    from torchao.quantization import pt2e as obs

    if qat:
        return obs.FusedMovingAvgObsFakeQuantize.with_args(eps=eps)
    if cfg.observer == "histogram":
        return obs.HistogramObserver.with_args(eps=eps)
    if cfg.observer == "minmax":
        return obs.MinMaxObserver.with_args(eps=eps)
    if cfg.observer == "moving_minmax":
        return obs.MovingAverageMinMaxObserver.with_args(eps=eps)
    return _percentile_observer().with_args(eps=eps, percentile=cfg.percentile)


def unclipped_qspec(qspec: Any, qat: bool) -> Any:
    """``qspec`` observed by its min/max (PTQ): for values whose rounding float ops read as well."""
    if qat or qspec is None:
        return qspec
    return dataclasses.replace(qspec, observer_or_fake_quant_ctr=_activation_ctr(QuantConfig(observer="minmax"), False))


def _with_activation_observer(qconfig: Any, cfg: QuantConfig, qat: bool) -> Any:
    """The library's config for the target with edgesr's choice of activation observer."""
    act = qconfig.input_activation
    if act is None:
        return qconfig
    act = dataclasses.replace(act, observer_or_fake_quant_ctr=_activation_ctr(cfg, qat))
    return dataclasses.replace(qconfig, input_activation=act, output_activation=act)


def _litert_qat_quantizer(lq: Any) -> Any:
    """litert-torch's quantizer for QAT without its conv+BatchNorm patterns: litert-torch 0.10 builds them by
    exporting a plain function, which torch 2.13's ``torch.export`` rejects. edgesr's captured SR graphs carry no
    BatchNorm (the export rewrites fold them), so those patterns would never match; the rest of the annotation
    (and its fake-quantizers: the ``is_qat`` config) is litert's own."""

    class LiteRTQATQuantizer(lq.PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list[str] = []

    return LiteRTQATQuantizer()


def restore_source_fns(gm: GraphModule) -> list[Node]:
    """Record which torch function made each activation add, concat and max pool, so litert-torch annotates them.

    litert's annotators find these ops by ``source_fn_stack``, which only a strict (Dynamo) capture records;
    edgesr captures non-strict (dynamic H, W), so without this every residual add, concat and max pool stayed
    float in the LiteRT fake-quant model. The converter still makes a concat int8 with one scale for its
    inputs and output (TFLite's same-scale rule), so the branches feeding it were rounded once at the concat's
    scale in the ``.tflite`` but clamped and rounded at their own in PyTorch (EIMN-A: 10 % of a concat's
    values off by up to 5 LSB after the first block). Adds with a constant operand (a norm's epsilon) are left
    alone: they belong to the float norm."""
    import operator

    import torch.nn.functional as F

    source = {torch.ops.aten.add.Tensor: operator.add, torch.ops.aten.cat.default: torch.cat,
              torch.ops.aten.max_pool2d.default: F.max_pool2d}
    restored = []
    for node in gm.graph.nodes:
        fn = source.get(node.target) if node.op == "call_function" else None
        if fn is None or node.meta.get("source_fn_stack"):
            continue
        if fn is operator.add and not all(isinstance(a, Node) and a.op != "get_attr" for a in node.args[:2]):
            continue
        node.meta["source_fn_stack"] = [(node.name, fn)]
        restored.append(node)
    return restored


def base_quantizer(target: str, cfg: QuantConfig, qat: bool) -> Any:
    """The target's own PT2E quantizer with edgesr's observer choice, before SR-aware filtering."""
    check_target(target)
    if target == "tflite":
        from litert_torch.quantize import pt2e_quantizer as lq

        qconfig = _with_activation_observer(
            lq.get_symmetric_quantization_config(is_per_channel=cfg.per_channel, is_qat=qat), cfg, qat)
        quantizer = (_litert_qat_quantizer(lq) if qat else lq.PT2EQuantizer()).set_global(qconfig)
    else:
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq

        qconfig = _with_activation_observer(
            xq.get_symmetric_quantization_config(is_per_channel=cfg.per_channel, is_qat=qat), cfg, qat)
        quantizer = xq.XNNPACKQuantizer().set_global(qconfig)
    quantizer.edgesr_activation_qspec = qconfig.output_activation
    return quantizer


def module_path(node: Node) -> str:
    """The dotted path of the innermost module a node came from ('' for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    path = path.replace("L['self'].", "").replace("L__self___", "")
    return path[len("model."):] if path.startswith("model.") else ("" if path == "model" else path)


def _scalar_mul(node: Node) -> bool:
    """x * constant (a scale, not a product of two activations)."""
    return any(not isinstance(a, Node) for a in node.args[:2])


def _in_norm(node: Node) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any("LayerNorm" in str(t) or "ChannelNorm" in str(t) for _, t in stack.values())


def conv_nodes(gm: GraphModule) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in CONV_OPS]


def float_nodes(gm: GraphModule, cfg: QuantConfig, only: str | None = None) -> set[Node]:
    """Nodes that must stay in floating point under ``cfg`` (or all but the layer ``only``)."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    keep: set[Node] = set()
    convs = conv_nodes(gm)
    for name in cfg.keep_float:
        if name == "first" and convs:
            keep.add(convs[0])
        elif name == "last" and convs:
            keep.add(convs[-1])
        else:
            keep |= {n for n in nodes if module_path(n) == name or module_path(n).startswith(name + ".")}
    if getattr(cfg, "float_tails", False):
        for conv in [n for n in keep if n.target in CONV_OPS]:
            node = conv
            while len(node.users) == 1 and next(iter(node.users)).target in TAIL_OPS:
                node = next(iter(node.users))
                keep.add(node)
    if getattr(cfg, "float_norms", False):
        keep |= {n for n in nodes if _in_norm(n)}
    if cfg.float_adds:
        keep |= {n for n in nodes if n.target in ADD_OPS}
    if getattr(cfg, "float_muls", False):
        keep |= {n for n in nodes if n.target in MUL_OPS and not _scalar_mul(n)}
    # the outlier migration's compensating multiplies restore the imbalanced values: an int8 scale cannot hold them
    keep |= {n for n in nodes if n.name.startswith("edgesr_migrate_")}
    if cfg.keep_nodes:
        names = set(cfg.keep_nodes)
        keep |= {n for n in nodes if n.name in names}
    if only is not None:
        keep |= {n for n in nodes if not (module_path(n) == only or module_path(n).startswith(only + "."))}
    return keep


def unknown_keep_float(gm: GraphModule, cfg: QuantConfig) -> list[str]:
    paths = {module_path(n) for n in gm.graph.nodes}
    return [k for k in cfg.keep_float
            if k not in ("first", "last") and not any(p == k or p.startswith(k + ".") for p in paths)]


def _shared_refs(annotation: Any) -> list[Node]:
    """Nodes a node's annotation borrows quantization parameters from (SharedQuantizationSpec)."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    specs = list(getattr(annotation, "input_qspec_map", {}).values()) + [getattr(annotation, "output_qspec", None)]
    refs: list[Node] = []
    for spec in specs:
        if isinstance(spec, SharedQuantizationSpec):
            eon = spec.edge_or_node
            refs += list(eon) if isinstance(eon, tuple) else [eon]
    return refs


def strip_annotations(gm: GraphModule, drop: set[Node]) -> None:
    """Leave ``drop`` in float; annotations that share parameters with a dropped node go too (to a fixpoint),
    or prepare would look up an observer that was never made."""
    drop = set(drop)
    changed = True
    while changed:
        changed = False
        for node in gm.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue
            if node in drop or any(r in drop and r.meta.get("quantization_annotation") is None
                                   for r in _shared_refs(ann)):
                node.meta.pop("quantization_annotation", None)
                drop.add(node)
                changed = True


# Ops that move int8 values without arithmetic: a quantized consumer behind them still reads the island's output.
TRANSPARENT_OPS = {torch.ops.aten.slice.Tensor, torch.ops.aten.max_pool2d.default, torch.ops.aten.view.default,
                   torch.ops.aten.reshape.default, torch.ops.aten.permute.default, torch.ops.aten.pixel_shuffle.default,
                   torch.ops.aten.pixel_unshuffle.default, torch.ops.aten.split.Tensor, torch.ops.aten.chunk.default,
                   torch.ops.aten.split_with_sizes.default, torch.ops.aten.narrow.default,
                   torch.ops.aten.contiguous.default, torch.ops.aten.clone.default}


def _feeds_quantized_input(user: Node, src: Node, seen: set[Node] | None = None) -> bool:
    """Whether ``src``'s value reaches an int8 input through ``user`` (directly, or via data-movement ops)."""
    import operator

    ann = user.meta.get("quantization_annotation")
    if ann is not None:
        return src in getattr(ann, "input_qspec_map", {})
    if user.op != "call_function" or not (user.target in TRANSPARENT_OPS or user.target is operator.getitem):
        return False
    seen = seen if seen is not None else set()
    if user in seen:
        return False
    seen.add(user)
    return any(_feeds_quantized_input(u, user, seen) for u in user.users)


def float_island(gm: GraphModule) -> set[Node]:
    """Nodes that compute in float after annotation (data movement does not count: it follows its input)."""
    import operator

    return {n for n in gm.graph.nodes if n.op == "call_function" and n.meta.get("quantization_annotation") is None
            and n.target not in TRANSPARENT_OPS and n.target is not operator.getitem}


def annotate_island_exits(gm: GraphModule, qspec: Any, island: set[Node] | None = None,
                          shared_qspec: Any = None) -> list[Node]:
    """Give each float value that leaves the float island for int8 consumers one output quantizer.

    Without it every int8 consumer quantizes the float value with its own parameters; the TFLite converter
    then merges those into one QUANTIZE (the first consumer's range) followed by requantizes, which clips
    whatever the first range does not cover: the fake-quant model and the .tflite disagree (SAFMN x4: 19 dB).
    With one exit quantizer the consumers share it (PT2E's implicit sharing) or requantize from it, and
    the fake-quant graph computes what the int8 kernels compute.

    A value that float ops read too gets its quantizer on a copy that only the int8 readers read (see
    ``_exit_on_copies``): on the value itself the rounding would reach the float readers as well (EIMN-A's
    outlier guard: PTQ Set5 -0.26 dB that way, -0.11 dB with copies). Copies need the value in the converter's
    NHWC layout, which a convolution's output is; a value made by float elementwise ops after a reduction (a
    LayerNorm's output) stays NCHW, and where its int8 readers read through data-movement ops (SAFM's channel
    slices) the converter moves their quantizers ahead of its layout transpose, which the float readers share,
    merged into one at the smallest range (SAFMN x4 with float multiplies: the .tflite 18 dB off its fake-quant
    model). There the exit goes on the value itself, float readers included, as the converter computes it,
    with ``shared_qspec`` (default ``qspec``): a range that clips there clips the float path too, and a
    clipping observer sized on natural training crops cuts the saturated colours of other images (SAFMN
    NTIRE x4, LiteRT, 12 convs float, min/max ranges on those exits instead of the histogram's: Set5's
    butterfly 0.121 -> 0.026 dB, Set14's ppt3 0.148 -> 0.058, Set5 0.044 -> 0.016 while validation went
    0.024 -> 0.031: validation bounds Set5 again). Min/max on every exit costs more than it gains (Set5 0.036)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    island = float_island(gm) if island is None else island
    exits: list[Node] = []
    for node in list(gm.graph.nodes):
        if node not in island or node.op != "call_function" or not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        if not node.meta["val"].is_floating_point() or node.meta.get("quantization_annotation") is not None:
            continue
        int8_readers = [u for u in node.users if u not in island and _feeds_quantized_input(u, node)]
        if not int8_readers:
            continue
        nchw_through_movement = node.target not in CONV_OPS and any(
            u.meta.get("quantization_annotation") is None for u in int8_readers)
        if len(int8_readers) == len(node.users) or nchw_through_movement:
            shared = len(int8_readers) < len(node.users) and shared_qspec is not None
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=shared_qspec if shared else qspec, _annotated=True)
            exits.append(node)
        else:
            exits += _exit_on_copies(gm, node, int8_readers, qspec)
    gm.recompile()
    return exits


def _exit_on_copies(gm: GraphModule, value: Node, int8_readers: list[Node], qspec: Any) -> list[Node]:
    """One quantized clone of ``value`` for its int8 consumers; a data-movement reader (slice, max pool ...)
    stays float and gets its own clone behind it: an int8 slice between two different scales is what the
    TFLite converter rejects ('same scale constraint'), a float slice followed by a QUANTIZE it accepts."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    copies: list[Node] = []
    direct = [u for u in int8_readers if u.meta.get("quantization_annotation") is not None]
    if direct:
        with gm.graph.inserting_after(value):
            clone = gm.graph.call_function(torch.ops.aten.clone.default, (value,))
        clone.meta = {k: v for k, v in value.meta.items() if k != "quantization_annotation"}
        for u in direct:
            u.replace_input_with(value, clone)
            ann = u.meta["quantization_annotation"]
            if value in ann.input_qspec_map:
                ann.input_qspec_map[clone] = ann.input_qspec_map.pop(value)
        clone.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=qspec, _annotated=True)
        copies.append(clone)
    for t in int8_readers:
        if t not in direct and isinstance(t.meta.get("val"), torch.Tensor):
            copies += _exit_on_copies(gm, t, [w for w in t.users if _feeds_quantized_input(w, t)], qspec)
        elif t not in direct:  # split-like: its getitem outputs are the values
            for g in t.users:
                copies += _exit_on_copies(gm, g, [w for w in g.users if _feeds_quantized_input(w, g)], qspec)
    return copies


def make_quantizer(target: str, cfg: QuantConfig, qat: bool = False,
                   keep: Callable[[GraphModule], set[Node]] | None = None) -> Any:
    """The target's quantizer, then the annotations of the nodes ``cfg`` keeps in float dropped (or the nodes
    ``keep(graph)`` returns, for per-layer sensitivity)."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    inner = base_quantizer(target, cfg, qat)

    class _SRQuantizer(Quantizer):
        def transform_for_annotation(self, model: GraphModule) -> GraphModule:
            return inner.transform_for_annotation(model)

        def annotate(self, model: GraphModule) -> GraphModule:
            if target == "tflite":
                restore_source_fns(model)
            if hasattr(inner, "SUPPORTED_PATTERNS") and not any(
                    "batch_norm" in str(n.target) for n in model.graph.nodes if n.op == "call_function"):
                # conv-bn patterns are traced (torch.export, ~0.4 s each) before matching: skip what cannot match
                inner.SUPPORTED_PATTERNS = [p for p in type(inner).SUPPORTED_PATTERNS if "_bn" not in p.name]
            model = inner.annotate(model)
            drop = keep(model) if keep is not None else float_nodes(model, cfg)
            strip_annotations(model, drop)
            if target == "tflite" and cfg.island_exits:  # XNNPACK quantizes per consumer as the graph says
                annotate_island_exits(model, inner.edgesr_activation_qspec,
                                      shared_qspec=unclipped_qspec(inner.edgesr_activation_qspec, qat))
            return model

        def validate(self, model: GraphModule) -> None:
            inner.validate(model)

    q = _SRQuantizer()
    q.inner = inner  # litert's converter wants its own quantizer object
    return q
