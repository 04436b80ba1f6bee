"""Export forms: the graph every exporter and the int8 capture take, for any architecture.

XNNPACK (ExecuTorch 1.5.1) leaves some ops on portable CPU kernels (``mean(dim=1)``, ``split``/``chunk``,
convolutions whose weight is computed in the graph); others are delegated but expensive (SCNet's shift as 24
slices, LAMNet's FSA as ~100 narrow/select ops per call). What replaces them is a fact of each architecture
and lives in its file, in one of two ways:

* a module whose ``forward`` takes another path under ``torch.export`` (``ChannelNorm``, ``Shift8``,
  ``channel_mean``, ``spatial_mean`` in :mod:`edgesr.models.layers`): nothing to do here;
* a module with ``export_form()``, returning the module to use in the exported graph (EIMN's DFFM, LAMNet's
  ULM: constant kernels as buffers). Parameter names, and so state_dict keys, stay the official ones.

:func:`export_friendly` applies them to a deep copy, after folding BatchNorms into the convs that read them
(``fold_norms(batchnorm_only=True)``). Equal to the eval model up to float rounding (≤ 1e-5, tested).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import ChannelNorm
from .fold import fold_norms
from .hazards import no_inplace_modules

__all__ = ["export_friendly", "applicable_rewrites", "fp16_safe_norms", "max_abs_diff"]


def _foldable_batchnorms(model: nn.Module) -> bool:
    return any(isinstance(getattr(b, attr, None), nn.BatchNorm2d)
               for b in model.modules() if hasattr(b, "norm_folds") for attr, _, _ in b.norm_folds())


def applicable_rewrites(model: nn.Module) -> list[str]:
    """What :func:`export_friendly` changes in ``model`` (recorded in the artifact's sidecar)."""
    names = ["fold_batchnorm"] if _foldable_batchnorms(model) else []
    forms = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "export_form")})
    return names + [f"export_form:{n}" for n in forms]


def export_friendly(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """A deep copy of ``model`` (eval mode) in its export form."""
    out = no_inplace_modules(copy.deepcopy(model).eval())
    names = applicable_rewrites(out) if names is None else names
    if "fold_batchnorm" in names:
        fold_norms(out, batchnorm_only=True)
    if any(n.startswith("export_form:") for n in names):
        _swap(out)
    return out.eval()


def for_target(model: nn.Module, target: str | None) -> list[str]:
    """Let modules pick the form of an exact op that ``target``'s runtime runs fastest (``for_target(target)`` in
    the architecture file, e.g. SAFM's upsample). In place; returns the module paths whose form changed."""
    if target is None:
        return []
    found = []
    for name, m in model.named_modules():
        if hasattr(m, "for_target") and m.for_target(target):
            found.append(name)
    return found


def _swap(model: nn.Module) -> None:
    for name, child in list(model.named_children()):
        if hasattr(child, "export_form"):
            new = child.export_form()
            if new is not child:
                setattr(model, name, new)
            child = new
        _swap(child)


def fp16_safe_norms(model: nn.Module, x: torch.Tensor, limit: float = 16.0) -> dict[str, float]:
    """Keep LayerNorms finite in fp16: scale ``d = x - mean`` by a power of two before squaring.

    fp16 stops at 65504, so ``d²`` overflows once one channel is 256 away from the mean — EIMN-A's outlier
    channel reaches ~1000 and its fp16 artifact then outputs garbage. Each norm whose ``max |d|`` on real
    photos at ``x``'s size exceeds ``limit`` gets ``prescale = 2^-k`` with ``max |d| · 2^-k ≤ limit``; a
    power-of-two scale is exact in fp32, so the fp32 function is unchanged. Photos, not noise: uniform noise
    drives EIMN-A past the fp16 range before any norm, and a scale sized for it would flush the small
    deviations of flat photo regions to zero. Returns {module: prescale} for the norms that were scaled.
    """
    norms = {n: m for n, m in model.named_modules() if isinstance(m, ChannelNorm)}
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
        from ..data.io import load_image
        from ..data.samples import CALIB_IMAGES, sample_paths

        photos = [torch.from_numpy(load_image(p).copy()).permute(2, 0, 1)[None].float()
                  for p in sample_paths(CALIB_IMAGES[:2])]
        photos = [p / 255.0 if p.max() > 1.5 else p for p in photos]
    except Exception:  # noqa: BLE001 - the probe must never stop an export
        photos = [F.avg_pool2d(x, 8, ceil_mode=True)]
    return [F.interpolate(p, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False,
                          antialias=True).to(x.dtype)
            for p in photos]


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a(x) - b(x)).abs().max())
