"""Export-friendly forms: functions from model to model that keep the math and change the ops.

XNNPACK (ExecuTorch 1.5.1) leaves some ops on portable CPU kernels: ``mean(dim=1)``, ``split``/``chunk``
(and convolutions whose weight is computed in the graph); other patterns are delegated but expensive to
lower and run (SCNet's shift as 24 slices, LAMNet's FSA as ~100 narrow/select ops per call). Each rewrite below replaces such a pattern with
ops that every backend delegates (1×1 convs, slices, rsqrt), keeping parameter values. They are equal to
the eval model up to float rounding (≤ 1e-5, asserted in the tests) at every input size.

Each ``rewrite(model)`` changes ``model`` in place and returns it; :func:`export_friendly` applies all of
them to a deep copy. Module classes are swapped for subclasses with an export-form ``forward`` so parameter
names (and state_dict keys) stay the official ones.
"""

from __future__ import annotations

import math

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import eimn, lamnet, safmn, scnet
from ..reparam.fold import ChannelNorm

Rewrite = Callable[[nn.Module], nn.Module]


# --------------------------------------------------------------------------------- helpers
def channel_mean(x: torch.Tensor, avg: torch.Tensor) -> torch.Tensor:
    """``x.mean(dim=1, keepdim=True)`` as a 1×1 conv with a constant 1/C kernel (delegated everywhere)."""
    return F.conv2d(x, avg)


def _avg_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((1, channels, 1, 1), 1.0 / channels, dtype=like.dtype, device=like.device)


class ConvMeanLayerNorm(nn.Module):
    """Channels-first LayerNorm written as ``d * rsqrt(mean(d²) + eps)`` with the channel means as 1×1 convs.

    Replaces edgesr's ``ChannelsFirstLayerNorm`` (SAFMN, EIMN) and LAMNet's ``LayerNormUnchanged``;
    ``weight``/``bias`` keep the source values (reshaped to 1×C×1×1).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> None:
        super().__init__()
        c = weight.numel()
        self.weight = nn.Parameter(weight.detach().reshape(1, c, 1, 1).clone())
        self.bias = nn.Parameter(bias.detach().reshape(1, c, 1, 1).clone())
        self.eps = float(eps)
        self.register_buffer("avg", _avg_kernel(c, weight.detach()), persistent=False)
        self.prescale = 1.0  # set by fp16_safe_norms; a power of two, so exact in fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - channel_mean(x, self.avg)
        eps = self.eps
        if self.prescale != 1.0:
            d, eps = d * self.prescale, eps * self.prescale ** 2
        return d * torch.rsqrt(channel_mean(d * d, self.avg) + eps) * self.weight + self.bias


def fp16_safe_norms(model: nn.Module, x: torch.Tensor, limit: float = 16.0) -> dict[str, float]:
    """Keep LayerNorms finite in fp16: scale ``d = x - mean`` by a power of two before squaring.

    fp16 stops at 65504, so ``d²`` overflows once one channel is 256 away from the mean — EIMN-A's outlier
    channel reaches ~1000 and its fp16 artifact then outputs garbage. Each norm whose ``max |d|`` on real
    photos at ``x``'s size exceeds ``limit`` gets ``prescale = 2^-k`` with ``max |d| · 2^-k ≤ limit``; a
    power-of-two scale is exact in fp32, so the fp32 function is unchanged. Photos, not noise: uniform noise
    drives EIMN-A past the fp16 range before any norm, and a scale sized for it would flush the small
    deviations of flat photo regions to zero. Returns {module: prescale} for the norms that were scaled.
    """
    norms = {n: m for n, m in model.named_modules() if isinstance(m, (ConvMeanLayerNorm, ChannelNorm))}
    if not norms:
        return {}
    peak: dict[str, float] = dict.fromkeys(norms, 0.0)

    def probe(name: str) -> Callable:
        def hook(_: nn.Module, inputs: tuple, __: torch.Tensor) -> None:
            v = inputs[0]
            peak[name] = max(peak[name], float((v - v.mean(dim=1, keepdim=True)).abs().max()))
        return hook

    handles = [m.register_forward_hook(probe(n)) for n, m in norms.items()]
    try:
        with torch.no_grad():
            for probe_input in _photo_probes(x):
                model(probe_input)
    finally:
        for h in handles:
            h.remove()
    scaled = {}
    for name, m in norms.items():
        k = max(0, math.ceil(math.log2(peak[name] / limit))) if peak[name] > limit else 0
        m.prescale = 2.0 ** -k
        if k:
            scaled[name] = m.prescale
    return scaled


def _photo_probes(x: torch.Tensor) -> list[torch.Tensor]:
    """Natural images at ``x``'s size: scikit-image's sample photos (shipped with the wheel), else a smooth ``x``."""
    try:
        from ..data.samples import CALIB_IMAGES, sample_paths
        from ..data.io import load_image

        photos = [torch.from_numpy(load_image(p).copy()).permute(2, 0, 1)[None].float()
                  for p in sample_paths(CALIB_IMAGES[:2])]
        photos = [p / 255.0 if p.max() > 1.5 else p for p in photos]
    except Exception:  # noqa: BLE001 - the probe must never stop an export
        photos = [F.avg_pool2d(x, 8, ceil_mode=True)]
    return [F.interpolate(p, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False,
                          antialias=True).to(x.dtype)
            for p in photos]


def _replace_modules(model: nn.Module, fn: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace every submodule for which ``fn`` returns a module; returns how many were replaced."""
    count = 0
    for name, child in list(model.named_children()):
        new = fn(child)
        if new is not None:
            setattr(model, name, new)
            count += 1
        else:
            count += _replace_modules(child, fn)
    return count


class ShiftConv(nn.Module):
    """SCNet's Shift8 as one depthwise 3×3 conv with one-hot kernels (spec §5): exact (products with 1 and 0),
    one op instead of pad + 24 slices + cat, and what every delegate runs natively."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        weight = torch.zeros(8 * groups, 1, 3, 3)
        for j, (dy, dx) in enumerate(scnet.SHIFT8_OFFSETS):
            weight[j * groups:(j + 1) * groups, 0, 1 + dy, 1 + dx] = 1.0
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=1, groups=self.weight.shape[0])


# ------------------------------------------------------------------------------ rewrites
def shift_as_conv(model: nn.Module) -> nn.Module:
    """SCNet: every ``Shift8`` -> :class:`ShiftConv`."""
    _replace_modules(model, lambda m: ShiftConv(m.groups) if isinstance(m, scnet.Shift8) else None)
    return model


def layer_norm_conv_mean(model: nn.Module) -> nn.Module:
    """Channels-first LayerNorms -> :class:`ConvMeanLayerNorm`, and the deploy form's ``ChannelNorm`` to its
    conv-mean path (no ``mean(dim=1)`` left)."""
    for m in model.modules():
        if isinstance(m, ChannelNorm):
            m.conv_mean = True

    def swap(m: nn.Module) -> nn.Module | None:
        if isinstance(m, (safmn.ChannelsFirstLayerNorm, eimn.ChannelsFirstLayerNorm)):
            return ConvMeanLayerNorm(m.weight, m.bias, m.eps)
        if isinstance(m, lamnet.LayerNormUnchanged):
            return ConvMeanLayerNorm(m.alpha, m.beta, m.eps)
        return None

    _replace_modules(model, swap)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """EIMN: fold each pre-norm BatchNorm into the 1×1 convs that read it (spec: BN1 into ``proj_value.0``
    and ``proj_query.0``, BN2 into ``linear_in``), then drop it. Exact: 1×1 convs have no padding."""
    for block in model.modules():
        if isinstance(block, eimn.EIMNBlock) and isinstance(block.norm1, nn.BatchNorm2d):
            _fold_bn(block.norm1, [block.attn.proj_value[0], block.attn.proj_query[0]])
            _fold_bn(block.norm2, [block.mlp.linear_in])
            block.norm1, block.norm2 = nn.Identity(), nn.Identity()
    return model


@torch.no_grad()
def _fold_bn(bn: nn.BatchNorm2d, convs: list[nn.Conv2d]) -> None:
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    t = bn.bias - bn.running_mean * s
    for conv in convs:
        if conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError("BatchNorm folding expects plain 1x1 convs after the norm")
        w = conv.weight
        bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        conv.bias = nn.Parameter(bias + (w[:, :, 0, 0] * t).sum(dim=1))
        conv.weight.copy_(w * s[None, :, None, None])


class _SlicedMOLRCM(eimn.MOLRCM):
    """MOLRCM with the channel split as slices (``split_with_sizes`` is not delegated)."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        value = self.proj_value(u)
        query = self.region(self.proj_query(u))
        c1, c2, _ = self.split
        q1, q2, q3 = query[:, :c1], query[:, c1:c1 + c2], query[:, c1 + c2:]
        ctx = self.fusion(torch.cat([self.spatial_1(q1), q2, self.spatial_2(q3)], dim=1))
        return self.out(F.silu(ctx) * value)


class _SlicedSADFFM(eimn.SADFFM):
    """SADFFM with ``chunk(2)`` as slices."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        y = self.SAL(self.linear_in(v))
        h = y.shape[1] // 2
        return self.DFFM(self.linear_out(F.gelu(y[:, :h]) * y[:, h:]))


def spatial_mean(x: torch.Tensor, two_pass: bool = True) -> torch.Tensor:
    """Mean over H·W; for float graphs as an average pool over W, then over H (exact in real arithmetic).

    XNNPACK's fp32 mean reduces H·W in one pass: at 180×320 its relative error is 7e-6 against 2e-7 in two
    pools (PyTorch: 2e-7), and EIMN-A gates every block with a whole-image mean of activations reaching ~650
    (its .pte/.tflite max |diff| from PyTorch: 1.5e-4 with one pass, 4e-6 with two). Pools, not ``mean(dim=3)``:
    XNNPACK delegates a mean only over both spatial dims. Static sizes only (float exports are fixed-size).
    int8 graphs keep one pass (``two_pass=False``): the int8 mean accumulates exactly in int32, a second pass
    would only add a requantization."""
    if two_pass:
        return F.avg_pool2d(F.avg_pool2d(x, (1, x.shape[3])), (x.shape[2], 1))
    return x.mean(dim=(2, 3), keepdim=True)


class _ConstWeightDFFM(eimn.DFFM):
    """DFFM whose ``spatial_expand`` halves are constant buffers (a conv whose weight is a graph op is not
    delegated) and whose LayerNorm is already swapped by :func:`layer_norm_conv_mean` if that ran."""

    two_pass_mean = True  # see spatial_mean; edgesr.quantize turns it off

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.norm(z)
        g = F.gelu(self.global_reduce(spatial_mean(n, self.two_pass_mean)))
        loc = F.gelu(self.local_reduce(n))
        c_attn = torch.sigmoid(self.channel_expand(g))
        s_logit = F.conv2d(loc, self.w_local) + F.conv2d(g, self.w_global, self.spatial_expand.bias)
        return z * c_attn * torch.sigmoid(s_logit)


class _SlicedDGFN(lamnet.DGFN):
    """LAMNet DGFN with ``chunk(2)`` as slices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(self.project_in(x))
        h = y.shape[1] // 2
        x1, x2 = y[:, :h], y[:, h:]
        gate = F.gelu(x1)
        return self.project_out(torch.cat([gate * x1, gate * x2], dim=1))


def fsa_kernels(taps: list[tuple[int, int]], channels: int, num_heads: int, dim: int,
                like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constant kernels that turn LAMNet's focal separable attention into three convs (see :func:`fsa_conv`).

    * ``box`` (C·K, 1, 1, P) or (C·K, 1, P, 1): depthwise, output channel c·K + k = the mean of channel c
      over tap k's segment (zero padding counted, as the official divisor);
    * ``gather`` (C·K, K, 1, 1), used with ``groups=heads``: 0/1 kernel copying weight channel g(c)·K + k to
      channel c·K + k (K multiply-adds per output instead of heads·K for a dense 0/1 matrix);
    * ``ones`` (C, K, 1, 1): grouped 1×1 conv summing the K taps of each channel.
    """
    k_taps, r = len(taps), lamnet._patch_radius(taps)
    box = torch.zeros(channels * k_taps, 1, 2 * r + 1)
    for k, (start, size) in enumerate(taps):
        lo = start if start >= 0 else start - size + 1
        box[k::k_taps, 0, r + lo:r + lo + size] = 1.0 / size
    box = box[:, :, None, :] if dim % 4 == 3 else box[:, :, :, None]
    if channels % num_heads:
        raise ValueError(f"{channels} channels do not split into {num_heads} heads")
    gather = torch.zeros(channels * k_taps, k_taps, 1, 1)
    for k in range(k_taps):
        gather[k::k_taps, k] = 1.0
    ones = torch.ones(channels, k_taps, 1, 1)
    return tuple(t.to(dtype=like.dtype, device=like.device) for t in (box, gather, ones))  # type: ignore[return-value]


def fsa_conv(x: torch.Tensor, weight: torch.Tensor, box: torch.Tensor, gather: torch.Tensor,
             ones: torch.Tensor) -> torch.Tensor:
    """``focal_separable_attention`` as depthwise box conv, grouped 1×1 gather conv, multiply, grouped 1×1 sum.

    Four delegated ops instead of ~100 pad/narrow/reshape/select ops per call (LAMNet has 48 calls), with the
    same math up to summation order. Costs C·K-channel intermediates (K = 13 taps) at input resolution.
    """
    c = x.shape[1]
    pad = (box.shape[-1] // 2, box.shape[-2] // 2)
    seg = F.conv2d(x, box, padding=(pad[1], pad[0]), groups=c)
    heads = weight.shape[1] // gather.shape[1]
    return F.conv2d(seg * F.conv2d(weight, gather, groups=heads), ones, groups=c)


class _ExportLSAMixer(lamnet.LSAMixer):
    """LAMNet ULM with slices for ``chunk``, 1×1-conv channel means in the IEM and FSA as convs."""

    two_pass_mean = True  # see spatial_mean; edgesr.quantize turns it off

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_in(x)
        h = y.shape[1] // 2
        x1, x2 = y[:, :h], y[:, h:]
        x_c = self.channel_branch(x1)
        a = fsa_conv(x2, torch.tanh(self.h_kernel(x2)), self.fsa_box_h, self.fsa_gather, self.fsa_ones)
        a = fsa_conv(a, torch.tanh(self.v_kernel(a)), self.fsa_box_v, self.fsa_gather, self.fsa_ones)
        q = spatial_mean(a, self.two_pass_mean)
        spatial = x_c * torch.sigmoid(channel_mean(x_c * q, self.avg))
        r = channel_mean(x_c, self.avg)
        channel = a * torch.sigmoid(spatial_mean(a * r, self.two_pass_mean))
        return self.proj_out(torch.cat([spatial, channel], dim=1))


def slices_for_splits(model: nn.Module) -> nn.Module:
    """``chunk``/``split`` -> slices, channel means -> 1×1 convs, computed conv weights -> constants
    (EIMN's MOLRCM/SADFFM/DFFM, LAMNet's ULM/DGFN), and LAMNet's FSA as convs (:func:`fsa_conv`)."""
    for m in model.modules():
        if type(m) is eimn.MOLRCM:
            m.__class__ = _SlicedMOLRCM
        elif type(m) is eimn.SADFFM:
            m.__class__ = _SlicedSADFFM
        elif type(m) is eimn.DFFM:
            w_local, w_global = torch.split(m.spatial_expand.weight.detach(), m.hidden, dim=1)
            m.register_buffer("w_local", w_local.clone(), persistent=False)
            m.register_buffer("w_global", w_global.clone(), persistent=False)
            m.__class__ = _ConstWeightDFFM
        elif type(m) is lamnet.DGFN:
            m.__class__ = _SlicedDGFN
        elif type(m) is lamnet.LSAMixer:
            half = m.channel_branch[0].in_channels
            like = m.proj_in.weight.detach()
            m.register_buffer("avg", _avg_kernel(half, like), persistent=False)
            box_h, gather, ones = fsa_kernels(list(m.taps), half, m.num_head, -1, like)
            box_v, _, _ = fsa_kernels(list(m.taps), half, m.num_head, -2, like)
            for name, t in (("fsa_box_h", box_h), ("fsa_box_v", box_v), ("fsa_gather", gather), ("fsa_ones", ones)):
                m.register_buffer(name, t, persistent=False)
            m.__class__ = _ExportLSAMixer
    return model


REWRITES: dict[str, Rewrite] = {
    "shift_as_conv": shift_as_conv,
    "fold_batchnorm": fold_batchnorm,
    "layer_norm_conv_mean": layer_norm_conv_mean,
    "slices_for_splits": slices_for_splits,
}


def applicable_rewrites(model: nn.Module) -> list[str]:
    """Names of the rewrites that change something in ``model`` (for the sidecar)."""
    kinds = {type(m) for m in model.modules()}
    names = []
    if scnet.Shift8 in kinds:
        names.append("shift_as_conv")
    if eimn.EIMNBlock in kinds and any(isinstance(getattr(b, "norm1", None), nn.BatchNorm2d)
                                       for b in model.modules() if isinstance(b, eimn.EIMNBlock)):
        names.append("fold_batchnorm")
    if kinds & {safmn.ChannelsFirstLayerNorm, eimn.ChannelsFirstLayerNorm, lamnet.LayerNormUnchanged, ChannelNorm}:
        names.append("layer_norm_conv_mean")
    if kinds & {eimn.MOLRCM, eimn.SADFFM, eimn.DFFM, lamnet.DGFN, lamnet.LSAMixer}:
        names.append("slices_for_splits")
    return names


def export_friendly(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """A deep copy of ``model`` (eval mode) with the given rewrites (default: all that apply)."""
    out = copy.deepcopy(model).eval()
    for name in (applicable_rewrites(out) if names is None else names):
        out = REWRITES[name](out)
    return out.eval()


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a(x) - b(x)).abs().max())


__all__ = ["ConvMeanLayerNorm", "fp16_safe_norms", "ShiftConv", "shift_as_conv", "channel_mean", "fsa_kernels", "fsa_conv", "layer_norm_conv_mean", "fold_batchnorm", "slices_for_splits",
           "REWRITES", "applicable_rewrites", "export_friendly", "max_abs_diff"]
