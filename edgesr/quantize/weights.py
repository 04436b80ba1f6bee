"""Post-training algorithms on the captured graph's weights, before PT2E observes them: cross-layer
equalization, a per-channel weight scale search (layer output MSE) and bias correction.

All three change float weights only, so the graph PT2E prepares keeps its structure (a checkpoint stores the
changed weights; a reload rebuilds the same graph). They act on int8 convolutions only (float layers keep their
weights) and assume what the target quantizers do with weights: symmetric int8 in [-127, 127], one scale per
output channel (``per_channel``) or per tensor, scale = max |w| / 127.

Scale search and bias correction share one pass over the calibration inputs, which accumulates per convolution
the input patches' Gram matrix G = Σ x xᵀ and mean μ: a weight error Δw costs Δwᵀ G Δw in output squared error and
shifts the output mean by Δwᵀ μ, for every candidate scale without re-running the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

QMAX = 127
POS_HOMOGENEOUS = {getattr(torch.ops.aten, n).default for n in ("relu", "relu_", "leaky_relu", "leaky_relu_",
                                                                "prelu")}
SEARCH_GRID = tuple(1.0 - 0.025 * i for i in range(21))  # clip weights to 100 % ... 50 % of their range


def _conv2d(node: Node) -> bool:
    return node.op == "call_function" and node.target == torch.ops.aten.conv2d.default


def _attr(gm: GraphModule, node: object) -> torch.Tensor | None:
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    obj: object = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, torch.Tensor) else None


@dataclass
class ConvRef:
    """A plain 2-D convolution of the graph whose weight (and bias) are graph attributes."""

    node: Node
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def _pair(v: object, default: int) -> tuple[int, int] | None:
    if v is None:
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and all(isinstance(i, int) for i in v):
        return (v[0], v[0]) if len(v) == 1 else (int(v[0]), int(v[1]))
    return None  # 'same' / 'valid' strings or symbolic: not handled


def conv_refs(gm: GraphModule, skip: set[Node] | None = None) -> list[ConvRef]:
    """The graph's 2-D convolutions with constant weights, in graph order (``skip``: nodes that stay float)."""
    out = []
    for n in gm.graph.nodes:
        if not _conv2d(n) or (skip and n in skip):
            continue
        args = list(n.args) + [None] * (7 - len(n.args))
        w = _attr(gm, args[1])
        b = _attr(gm, args[2]) if args[2] is not None else None
        stride, padding, dilation = _pair(args[3], 1), _pair(args[4], 0), _pair(args[5], 1)
        groups = args[6] if isinstance(args[6], int) else 1
        if w is None or w.dim() != 4 or (args[2] is not None and b is None) or None in (stride, padding, dilation):
            continue
        out.append(ConvRef(n, w, b, stride, padding, dilation, groups))  # type: ignore[arg-type]
    return out


def add_missing_biases(gm: GraphModule, skip: set[Node] | None = None) -> int:
    """Give every int8 convolution without a bias a zero one (bias correction needs somewhere to write; done
    on reload too, so a stored checkpoint finds the same parameters)."""
    added = 0
    for ref in conv_refs(gm, skip):
        if ref.bias is not None:
            continue
        name = f"edgesr_bias_{ref.node.name}"
        gm.register_parameter(name, torch.nn.Parameter(torch.zeros(ref.weight.shape[0]), requires_grad=False))
        with gm.graph.inserting_before(ref.node):
            getter = gm.graph.get_attr(name)
        args = list(ref.node.args) + [None] * max(0, 3 - len(ref.node.args))
        args[2] = getter
        ref.node.args = tuple(args)
        added += 1
    if added:
        gm.graph.lint()
        gm.recompile()
    return added


# ------------------------------------------------------------------------------------- equalization
def _only_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def equalization_pairs(gm: GraphModule, skip: set[Node] | None = None) -> list[tuple[ConvRef, Node, ConvRef]]:
    """(conv1, activation, conv2) chains where conv1's output reaches only conv2, through one positively
    homogeneous activation (ReLU, LeakyReLU, PReLU): f(x / s) = f(x) / s for s > 0."""
    refs = {r.node: r for r in conv_refs(gm, skip)}
    pairs = []
    for node, first in refs.items():
        act = _only_user(node)
        if act is None or act.target not in POS_HOMOGENEOUS:
            continue
        nxt = _only_user(act)
        second = refs.get(nxt) if nxt is not None else None
        if second is None or second.node.args[0] is not act:
            continue
        c = first.weight.shape[0]
        if act.target == torch.ops.aten.prelu.default:
            slope = _attr(gm, act.args[1])
            if slope is None:
                continue
        if second.groups not in (1, c) or second.weight.shape[1] * second.groups != c:
            continue
        pairs.append((first, act, second))
    return pairs


@torch.no_grad()
def equalize(gm: GraphModule, skip: set[Node] | None = None, iterations: int = 4) -> int:
    """Cross-layer equalization (Nagel et al., 2019) in place: scale conv1's output channel i by 1/sᵢ and conv2's
    input channel i by sᵢ, sᵢ = √(r1ᵢ / r2ᵢ), so both see balanced per-channel weight ranges and a per-tensor
    scale wastes no levels on one large channel. The float function is unchanged. Returns the pairs equalized."""
    pairs = equalization_pairs(gm, skip)
    for _ in range(iterations):
        for first, _, second in pairs:
            c = first.weight.shape[0]
            r1 = first.weight.abs().flatten(1).amax(1)
            w2 = second.weight
            if second.groups == 1:
                r2 = w2.abs().transpose(0, 1).flatten(1).amax(1)
            else:  # depthwise: output channel i reads input channel i only
                r2 = w2.abs().flatten(1).amax(1)
            s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp_min(1e-12)).sqrt(), torch.ones_like(r1))
            first.weight.div_(s.view(c, 1, 1, 1))
            if first.bias is not None:
                first.bias.div_(s)
            if second.groups == 1:
                w2.mul_(s.view(1, c, 1, 1))
            else:
                w2.mul_(s.view(c, 1, 1, 1))
    return len(pairs)


# ---------------------------------------------------------------------------------- statistics pass
@dataclass
class ConvStats:
    """Per group g: Σ x xᵀ (K×K) and Σ x (K) over every output position, K = in-channels/groups × kh × kw."""

    gram: torch.Tensor   # (groups, K, K), float64
    total: torch.Tensor  # (groups, K), float64
    count: int = 0

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)


def _patches(ref: ConvRef, x: torch.Tensor) -> torch.Tensor:
    """(groups, K, positions) input patches of one conv, as its weights see them."""
    kh, kw = ref.weight.shape[2:]
    cols = F.unfold(x, (kh, kw), dilation=ref.dilation, padding=ref.padding, stride=ref.stride)
    n, k, p = cols.shape
    g = ref.groups
    # unfold orders rows by channel then kernel position, matching weight[o, c, i, j] flattened over (c, i, j)
    return cols.view(n, g, k // g, p).permute(1, 2, 0, 3).reshape(g, k // g, n * p)


@torch.no_grad()
def conv_stats(gm: GraphModule, refs: Sequence[ConvRef], inputs: Iterable[torch.Tensor],
               max_positions: int = 16384) -> dict[Node, ConvStats]:
    """One fp32 pass over ``inputs`` recording each conv's input statistics (positions subsampled evenly
    beyond ``max_positions`` per image, to bound memory and time on large crops)."""
    wanted = {r.node: r for r in refs}
    stats: dict[Node, ConvStats] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: Node):  # type: ignore[override]
            ref = wanted.get(node)
            if ref is not None:
                args, _ = self.fetch_args_kwargs_from_env(node)
                cols = _patches(ref, args[0].detach().double())
                if cols.shape[2] > max_positions:
                    idx = torch.linspace(0, cols.shape[2] - 1, max_positions).long()
                    cols = cols[:, :, idx]
                s = stats.get(node)
                if s is None:
                    g, k = cols.shape[:2]
                    s = stats[node] = ConvStats(torch.zeros(g, k, k, dtype=torch.float64),
                                                torch.zeros(g, k, dtype=torch.float64))
                s.gram += cols @ cols.transpose(1, 2)
                s.total += cols.sum(2)
                s.count += cols.shape[2]
            return super().run_node(node)

    from .graph import run_padded

    class Run(torch.nn.Module):
        capture_min_size = getattr(gm, "capture_min_size", 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Recorder(gm).run(x)

    for x in inputs:
        run_padded(Run(), x)
    return stats


# ------------------------------------------------------------------------------ weight quantization
def quantize_weight(w: torch.Tensor, per_channel: bool = True, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """What the int8 weight becomes (dequantized): symmetric, scale = clip × max |w| / 127, round to nearest."""
    amax = w.abs().flatten(1).amax(1) if per_channel else w.abs().amax().expand(w.shape[0])
    scale = (amax * torch.as_tensor(clip, dtype=w.dtype)).clamp_min(1e-12) / QMAX
    s = scale.view(-1, *([1] * (w.dim() - 1)))
    return (w / s).round().clamp(-QMAX, QMAX) * s


def _group_errors(ref: ConvRef, dw: torch.Tensor, st: ConvStats) -> torch.Tensor:
    """Output squared error per output channel, Δwᵀ G Δw, for a weight error ``dw`` (out, K)."""
    g = ref.groups
    per = dw.shape[0] // g
    d = dw.double().view(g, per, -1)                    # (groups, out/group, K)
    return torch.einsum("gok,gkl,gol->go", d, st.gram, d).reshape(-1)


@torch.no_grad()
def search_scales(refs: Sequence[ConvRef], stats: dict[Node, ConvStats], per_channel: bool = True,
                  grid: Sequence[float] = SEARCH_GRID) -> dict[str, float]:
    """Per conv (per output channel when ``per_channel``): the clip ratio of the int8 weight scale that minimises
    the layer's output MSE on the calibration inputs; the weights are clipped to it in place, so the target's
    min/max weight observer lands on the searched scale. Returns the output MSE gain per layer (ratio ≥ 1)."""
    gains: dict[str, float] = {}
    for ref in refs:
        st = stats.get(ref.node)
        if st is None:
            continue
        w = ref.weight
        flat = w.flatten(1)
        errs = torch.stack([_group_errors(ref, (quantize_weight(w, per_channel, a) - w).flatten(1), st)
                            for a in grid])                 # (len(grid), out)
        if per_channel:
            best = errs.argmin(0)
        else:
            best = errs.sum(1).argmin().expand(w.shape[0])
        ratio = torch.tensor([grid[i] for i in best.tolist()], dtype=w.dtype)
        amax = flat.abs().amax(1) if per_channel else flat.abs().amax().expand(w.shape[0])
        limit = (amax * ratio).view(-1, 1)
        flat.copy_(torch.maximum(torch.minimum(flat, limit), -limit))
        base = float(errs[0].sum())
        chosen = float(errs.gather(0, best.view(1, -1)).sum())
        gains[ref.node.name] = base / chosen if chosen > 0 else 1.0
    return gains


@torch.no_grad()
def correct_bias(refs: Sequence[ConvRef], stats: dict[Node, ConvStats], per_channel: bool = True) -> dict[str, float]:
    """Bias correction (Nagel et al., 2019, empirical): int8 weights shift each output channel's mean by
    Δwᵀ μ on the calibration inputs; subtract that shift from the bias. Needs a bias (see
    :func:`add_missing_biases`). Returns the largest shift removed per layer."""
    shifts: dict[str, float] = {}
    for ref in refs:
        st = stats.get(ref.node)
        if st is None or ref.bias is None:
            continue
        w = ref.weight
        g = ref.groups
        dw = (quantize_weight(w, per_channel) - w).flatten(1).double().view(g, w.shape[0] // g, -1)
        shift = torch.einsum("gok,gk->go", dw, st.mean).reshape(-1).to(ref.bias.dtype)
        ref.bias.sub_(shift)
        shifts[ref.node.name] = float(shift.abs().max())
    return shifts


def apply(gm: GraphModule, cfg: object, skip: set[Node], inputs: Sequence[torch.Tensor] | None) -> dict[str, object]:
    """The weight algorithms ``cfg`` asks for, in their order (equalize → scale search → bias correction).
    Without ``inputs`` (a reload) only the structural part runs: the added biases the checkpoint fills."""
    info: dict[str, object] = {}
    if getattr(cfg, "bias_correction", False):
        add_missing_biases(gm, skip)
    if inputs is None:
        return info
    if getattr(cfg, "equalize", False):
        info["equalized_pairs"] = equalize(gm, skip)
    search, correct = getattr(cfg, "scale_search", False), getattr(cfg, "bias_correction", False)
    if search or correct:
        refs = conv_refs(gm, skip)
        stats = conv_stats(gm, refs, inputs)
        per_channel = bool(getattr(cfg, "per_channel", True))
        if search:
            gains = search_scales(refs, stats, per_channel)
            info["scale_search_layers"] = sum(g > 1.0 for g in gains.values())
        if correct:
            shifts = correct_bias(refs, stats, per_channel)
            info["bias_corrected_layers"] = len(shifts)
    return info
