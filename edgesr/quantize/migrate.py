"""Outlier channel migration: move an activation's channel imbalance into the weights that read it.

XNNPACK, LiteRT and Core ML quantize activations per tensor. Where one channel of a residual stream is 30-300x
the others (EIMN-A's late stages), the outlier guard keeps that tensor float, and with it every convolution that
reads it. SmoothQuant (Xiao et al., 2023) divides such a tensor per channel by ``d`` and multiplies the reading
weights' input channels by ``d``: the fp32 function is unchanged, the activation's channels are even, and the
weights (quantized per output channel) take the imbalance, d_c = amax_c^a / wmax_c^(1-a).

A residual stream is one value as far as scaling goes: an add's operands and result must share ``d``. So ``d`` is
chosen per *group* of tensors joined by adds (with constants rescaled), whose producers can take 1/d exactly
(convolution rows, a constant multiply) and whose readers take d (convolution input channels, a constant
multiply); any other reader (a LayerNorm, a gate, the graph output) reads the original values through one
inserted float multiply by d. The plan (``d`` per group) is stored in the config, so a reload rebuilds the same
graph without the data.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch.fx import GraphModule, Node

from .outliers import _ChannelRanges

_ADD = {torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor}
_MUL = torch.ops.aten.mul.Tensor
_CONV = torch.ops.aten.conv2d.default
MIN_RATIO = 4.0   # groups whose channel ranges differ by less are left alone: int8 holds them


def _channels(node: object) -> int | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    shape = getattr(val, "shape", None)
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int) or not val.is_floating_point():
        return None
    return int(shape[1])


class _Consts:
    """Which nodes are constants (no path from the input) and their values."""

    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self.memo: dict[Node, torch.Tensor | None] = {}
        for n in gm.graph.nodes:  # in graph order, so no lookup recurses deeper than one node
            self.value(n)

    def value(self, node: object) -> torch.Tensor | float | None:
        if isinstance(node, (int, float)):
            return float(node)
        if not isinstance(node, Node):
            return None
        if node in self.memo:
            return self.memo[node]
        out: torch.Tensor | None = None
        if node.op == "get_attr":
            obj: object = self.gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            out = obj if isinstance(obj, torch.Tensor) else None
        elif node.op == "call_function" and not str(node.target).startswith("aten._assert"):
            args = [self.value(a) if isinstance(a, Node) else a for a in node.args]
            if all(a is not None for a, src in zip(args, node.args) if isinstance(src, Node)):
                try:
                    out = node.target(*args, **node.kwargs)
                except Exception:  # noqa: BLE001 (anything that does not evaluate is not a constant)
                    out = None
        self.memo[node] = out if isinstance(out, torch.Tensor) else None
        return self.memo[node]

    def per_channel(self, node: object, c: int) -> bool:
        """A constant that broadcasts along channels only (scalar, [C,1,1], [1,C,1,1]): it can be rescaled."""
        v = self.value(node)
        if isinstance(v, float):
            return True
        if v is None:
            return False
        if v.numel() == 1:
            return True
        shape = list(v.shape)
        return v.dim() in (3, 4) and shape[-3] == c and all(s == 1 for i, s in enumerate(shape) if i != len(shape) - 3)


def _single_use_attr(node: object) -> bool:
    return isinstance(node, Node) and node.op == "get_attr" and len(node.users) == 1


def _conv_reads(conv: Node, t: Node) -> bool:
    """``conv`` reads ``t`` as its input with a weight it alone uses, plain or depthwise (channels map 1:1)."""
    if conv.target != _CONV or conv.args[0] is not t or not _single_use_attr(conv.args[1]):
        return False
    if len(conv.args) > 2 and conv.args[2] is not None and not _single_use_attr(conv.args[2]):
        return False
    groups = conv.args[6] if len(conv.args) > 6 else 1
    return groups == 1 or groups == _channels(t)


class _Plan:
    """Groups of activations that share one channel scaling, and how each edge takes it."""

    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self.consts = _Consts(gm)
        self.parent: dict[Node, Node] = {}
        nodes = [n for n in gm.graph.nodes if n.op == "call_function" and _channels(n) and _channels(n) > 1
                 and self.consts.value(n) is None]
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}
        eligible = set(nodes)  # not the graph input: it cannot be rescaled
        for n in nodes:
            self.parent.setdefault(n, n)
            if n.target in _ADD:
                c = _channels(n)
                ins = [a for a in n.args[:2] if isinstance(a, Node) and self.consts.value(a) is None]
                others = [a for a in n.args[:2] if a not in ins]
                if all(a in eligible and _channels(a) == c for a in ins) \
                        and all(self.consts.per_channel(o, c) for o in others):
                    for a in ins:
                        self._union(n, a)
        self.groups: dict[Node, list[Node]] = {}
        for n in nodes:
            self.groups.setdefault(self._find(n), []).append(n)
        self.groups = {min(g, key=self.order.__getitem__): g for g in self.groups.values()
                       if all(self._producer_ok(t) for t in g)}
        self.group_of = {t: rep for rep, g in self.groups.items() for t in g}

    def _find(self, n: Node) -> Node:
        while self.parent.setdefault(n, n) is not n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def _union(self, a: Node, b: Node) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra is not rb:
            self.parent[rb] = ra

    def _producer_ok(self, t: Node) -> bool:
        """``t`` can be made ``t / d`` where it is computed: an add of the group, a conv's rows, a constant
        multiply."""
        if t.target in _ADD:
            return self._find(t) is self._find(next(a for a in t.args[:2] if isinstance(a, Node)
                                                    and self.consts.value(a) is None))
        if t.target == _CONV:
            return _single_use_attr(t.args[1]) and (len(t.args) < 3 or t.args[2] is None
                                                    or _single_use_attr(t.args[2]))
        return self._const_mul(t) is not None

    def _const_mul(self, n: Node) -> tuple[Node, object] | None:
        """(tensor operand, constant operand) of ``x * k`` with a per-channel ``k``."""
        if n.target != _MUL or len(n.args) != 2:
            return None
        a, b = n.args
        for x, k in ((a, b), (b, a)):
            if isinstance(x, Node) and self.consts.value(x) is None and _channels(x) \
                    and self.consts.per_channel(k, _channels(x)):
                return x, k
        return None

    def absorbs(self, t: Node, user: Node) -> bool:
        """``user`` reads ``t`` in a form that takes the scale: the group itself, a conv, a constant multiply."""
        if self.group_of.get(user) is not None and self.group_of.get(user) is self.group_of.get(t):
            return True
        if _conv_reads(user, t):
            return True
        cm = self._const_mul(user)
        return cm is not None and cm[0] is t and _channels(user) == _channels(t)


def plan(gm: GraphModule, inputs: Iterable[torch.Tensor], strength: float = 0.5,
         min_ratio: float = MIN_RATIO) -> dict[str, list[float]]:
    """Per group of imbalanced activations (keyed by its first node's name), the channel divisors d."""
    from .graph import pad_to_multiple

    ranges: dict[str, torch.Tensor] = {}
    runner = _ChannelRanges(gm, ranges)
    least = int(getattr(gm, "capture_min_size", 1))
    with torch.no_grad():
        for x in inputs:
            runner.run(pad_to_multiple(x, 1, least)[0])
    p = _Plan(gm)
    out: dict[str, list[float]] = {}
    for rep, members in p.groups.items():
        amax = torch.stack([ranges[t.name] for t in members if t.name in ranges]).amax(0) \
            if any(t.name in ranges for t in members) else None
        if amax is None:
            continue
        live = amax[amax > 1e-6]
        if live.numel() < 2 or float(amax.max()) / float(live.median()) <= min_ratio:
            continue
        wmax = torch.zeros_like(amax)
        readers = 0
        for t in members:
            for u in t.users:
                if p.group_of.get(u) is rep or not _conv_reads(u, t):
                    continue
                w = p.consts.value(u.args[1]).detach().abs()
                groups = u.args[6] if len(u.args) > 6 else 1
                per_in = w.amax(dim=(0, 2, 3)) if groups == 1 else w.amax(dim=(1, 2, 3)).view(amax.numel(), -1).amax(1)
                wmax = torch.maximum(wmax, per_in)
                readers += 1
        if not readers:
            continue  # nothing int8 reads it: evening it out buys nothing
        a = amax.clamp_min(1e-6)
        d = a.pow(strength) / wmax.clamp_min(1e-6).pow(1.0 - strength)
        d = torch.where(amax > 1e-6, d, torch.ones_like(d))
        d = (d / d.median()).clamp(1e-3, 1e3)
        out[rep.name] = [float(v) for v in d]
    return out


def _set_const(gm: GraphModule, node: Node, index: int, value: torch.Tensor, name: str) -> None:
    """Replace ``node.args[index]`` by a new constant attribute ``name`` holding ``value``."""
    gm.register_buffer(name, value.detach().clone())
    with gm.graph.inserting_before(node):
        getter = gm.graph.get_attr(name)
    args = list(node.args)
    args[index] = getter
    node.args = tuple(args)


def apply(gm: GraphModule, scales: dict[str, list[float]]) -> int:
    """Rescale the graph by a :func:`plan` (in place). The fp32 function is unchanged up to rounding. Returns the
    number of compensating multiplies inserted."""
    if not scales:
        return 0
    p = _Plan(gm)
    by_name = {rep.name: rep for rep in p.groups}
    missing = [k for k in scales if k not in by_name]
    if missing:
        raise ValueError(f"channel migration: the graph has no group {missing[0]!r} (a different model?)")
    d_of: dict[Node, torch.Tensor] = {}
    for key, values in scales.items():
        d = torch.tensor(values, dtype=torch.float32)
        for t in p.groups[by_name[key]]:
            d_of[t] = d

    def d_at(n: object, c: int | None) -> torch.Tensor:
        return d_of[n] if isinstance(n, Node) and n in d_of else torch.ones(c or 1)

    def d_read(x: object, reader: Node) -> torch.Tensor:
        """The scale ``reader`` takes on its input ``x``: x's, unless it reads x's original values."""
        return d_at(x, _channels(x)) if isinstance(x, Node) and p.absorbs(x, reader) else torch.ones(_channels(x) or 1)

    done: set[Node] = set()
    comp: dict[Node, Node] = {}
    inserted = 0
    for t in list(d_of):
        d = d_of[t]
        touched = [t] + [u for u in list(t.users) if p.absorbs(t, u)]
        for n in touched:
            if n in done:
                continue
            done.add(n)
            c_out = _channels(n)
            if n.target == _CONV:
                w = p.consts.value(n.args[1])
                d_in, d_out = d_read(n.args[0], n), d_at(n, c_out)
                groups = n.args[6] if len(n.args) > 6 else 1
                with torch.no_grad():
                    if groups == 1:
                        w.mul_(d_in.view(1, -1, 1, 1))
                    else:
                        w.mul_(d_in.repeat_interleave(w.shape[0] // d_in.numel()).view(-1, 1, 1, 1))
                    w.div_(d_out.view(-1, 1, 1, 1))
                    if len(n.args) > 2 and n.args[2] is not None:
                        p.consts.value(n.args[2]).div_(d_out)
            elif n.target in _ADD:
                for i, a in enumerate(n.args[:2]):
                    if not (isinstance(a, Node) and p.consts.value(a) is None):
                        k = p.consts.value(a)
                        k = torch.as_tensor(k, dtype=torch.float32).reshape(-1) if not isinstance(k, torch.Tensor) \
                            else k.reshape(-1)
                        _set_const(gm, n, i, (k / d_at(n, c_out)).view(1, -1, 1, 1),
                                   f"edgesr_migrate_{n.name}_{i}")
            elif p._const_mul(n) is not None:
                x, k = p._const_mul(n)
                kv = p.consts.value(k)
                kv = torch.as_tensor(kv, dtype=torch.float32) if not isinstance(kv, torch.Tensor) else kv
                factor = (d_read(x, n) / d_at(n, c_out)).view(1, -1, 1, 1)
                _set_const(gm, n, list(n.args).index(k), kv.reshape(1, -1, 1, 1) * factor,
                           f"edgesr_migrate_{n.name}")
        for u in [u for u in t.users if not p.absorbs(t, u)]:
            if t not in comp:  # readers that cannot take d read t * d: the original values
                name = f"edgesr_scale_{t.name}"
                gm.register_buffer(name, d.view(1, -1, 1, 1).clone())
                with gm.graph.inserting_after(t):
                    getter = gm.graph.get_attr(name)
                with gm.graph.inserting_after(getter):
                    m = gm.graph.create_node("call_function", _MUL, (t, getter), name=f"edgesr_migrate_{t.name}")
                # shape from t; module from the reader (a LayerNorm's multiply stays float with the norm), and no
                # source record: annotators that match ops by their source must not take it for t's conv
                m.meta = {k: v for k, v in t.meta.items() if k in ("val", "tensor_meta")}
                m.meta["nn_module_stack"] = u.meta.get("nn_module_stack", t.meta.get("nn_module_stack"))
                comp[t] = m
                inserted += 1
            u.replace_input_with(t, comp[t])
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return inserted
