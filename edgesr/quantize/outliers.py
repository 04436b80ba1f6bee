"""Outlier guard: find activations that one per-tensor int8 scale cannot hold, and keep them float.

Some SR nets grow a few huge channels late in the network (EIMN-A x4: one channel of the last blocks and of
the final skip sum reaches 15-300 while the median channel stays below 0.5). A per-tensor int8 scale set
by that channel rounds every other channel to a handful of levels, and no observer choice fixes it:
the only exact cure on backends without per-channel activation scales is to leave that tensor float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch.fx import GraphModule, Interpreter, Node


@dataclass
class Outlier:
    node: str          # graph node whose output is imbalanced
    module: str        # module path it came from ('' = top level)
    ratio: float       # largest channel's |max| / median channel's |max|
    peak: float        # largest |activation|


class _ChannelRanges(Interpreter):
    """Runs the float graph and keeps, per 4-D activation, the running per-channel |max|."""

    def __init__(self, gm: GraphModule, ranges: dict[str, torch.Tensor]) -> None:
        super().__init__(gm)
        self.ranges = ranges

    def run_node(self, n: Node):  # noqa: ANN201 (fx signature)
        out = super().run_node(n)
        if (n.op == "call_function" and isinstance(out, torch.Tensor) and out.dim() == 4
                and out.is_floating_point() and out.shape[1] > 3):
            amax = out.detach().abs().amax(dim=(0, 2, 3))
            prev = self.ranges.get(n.name)
            self.ranges[n.name] = amax if prev is None or prev.shape != amax.shape else torch.maximum(prev, amax)
        return out


@torch.no_grad()
def find_outliers(gm: GraphModule, inputs: Iterable[torch.Tensor], ratio: float) -> list[Outlier]:
    """Activations of the (float, captured) graph whose channel ranges differ by more than ``ratio``."""
    from .quantizers import module_path

    ranges: dict[str, torch.Tensor] = {}
    from .graph import pad_to_multiple

    runner = _ChannelRanges(gm, ranges)
    least = int(getattr(gm, "capture_min_size", 1))
    for x in inputs:  # below the graph's minimum side: edge-padded, as every other run of the graph
        runner.run(pad_to_multiple(x, 1, least)[0])
    nodes = {n.name: n for n in gm.graph.nodes}
    found = []
    for name, amax in ranges.items():
        live = amax[amax > 1e-6]  # channels that are always zero (dead ReLUs) say nothing about the scale
        if live.numel() < 2:
            continue
        med = float(live.median().clamp_min(1e-8))
        r = float(amax.max()) / med
        if r > ratio:
            found.append(Outlier(name, module_path(nodes[name]), r, float(amax.max())))
    return sorted(found, key=lambda o: -o.ratio)


def nodes_to_keep(gm: GraphModule, outliers: list[Outlier]) -> list[str]:
    """Each outlier's producer and every op that reads it: the tensor then never meets an int8 scale."""
    nodes = {n.name: n for n in gm.graph.nodes}
    keep: set[str] = set()
    for o in outliers:
        node = nodes[o.node]
        keep.add(node.name)
        keep |= {u.name for u in node.users if u.op == "call_function"}
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    return sorted(keep, key=order.__getitem__)
