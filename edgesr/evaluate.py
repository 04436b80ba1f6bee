"""Evaluation exactly as SR papers report it: uint8 SR output, Y channel, border crop = scale."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data.folders import Benchmark
from .data.io import to_tensor, to_uint8
from .metrics import psnr_y, ssim_y


@dataclass
class DatasetResult:
    name: str
    psnr_y: float
    ssim_y: float
    images: int
    seconds: float
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("name")
        return d


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, length) with at least ``overlap`` shared pixels; last tile flush right."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


@torch.no_grad()
def super_resolve(model: nn.Module, lr: torch.Tensor, scale: int, tile: int | None = None,
                  overlap: int = 24) -> torch.Tensor:
    """Run ``model`` on an N×3×H×W LR tensor, whole or tile by tile.

    Each ``tile``×``tile`` core is processed with ``overlap`` extra LR pixels of context on every side
    and only the core is kept, so a model whose receptive field is within ``overlap`` (SCNet: ~18 px)
    gives exactly the whole-image result. Models with whole-image operations (SAFMN's pooling grid,
    EIMN's and LAMNet's global means) differ slightly when tiled.
    """
    n, _, h, w = lr.shape
    if tile is None or (tile >= h and tile >= w):
        return model(lr)
    out = lr.new_zeros(n, 3, h * scale, w * scale)
    th, tw = min(tile, h), min(tile, w)
    for y in tile_starts(h, th, 0):
        for x in tile_starts(w, tw, 0):
            y0, y1 = max(0, y - overlap), min(h, y + th + overlap)
            x0, x1 = max(0, x - overlap), min(w, x + tw + overlap)
            patch = model(lr[..., y0:y1, x0:x1])
            oy, ox = (y - y0) * scale, (x - x0) * scale
            out[..., y * scale:(y + th) * scale, x * scale:(x + tw) * scale] = \
                patch[..., oy:oy + th * scale, ox:ox + tw * scale]
    return out


def evaluate(model: nn.Module, benchmark: Benchmark, scale: int, *, tile: int | None = None,
             overlap: int = 24, device: str | torch.device = "cpu", progress: bool = True) -> DatasetResult:
    """PSNR-Y/SSIM-Y averaged per image over one benchmark (the literature's averaging)."""
    crop = scale
    per_image: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    bar = tqdm(benchmark.pairs, desc=f"{benchmark.name} x{scale}", unit="img", disable=not progress,
               leave=False)
    for pair in bar:
        hr, lr = pair.load_hr(), pair.load_lr()
        sr = super_resolve(model, to_tensor(lr).to(device), scale, tile, overlap)
        sr_u8 = to_uint8(sr.cpu())
        if sr_u8.shape != hr.shape:
            raise ValueError(f"{benchmark.name}/{pair.name}: SR output {sr_u8.shape} vs HR {hr.shape}")
        per_image[pair.name] = {"psnr_y": psnr_y(sr_u8, hr, crop), "ssim_y": ssim_y(sr_u8, hr, crop)}
    seconds = time.perf_counter() - start
    return DatasetResult(
        name=benchmark.name,
        psnr_y=_mean(v["psnr_y"] for v in per_image.values()),
        ssim_y=_mean(v["ssim_y"] for v in per_image.values()),
        images=len(per_image),
        seconds=seconds,
        per_image=per_image,
    )


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else math.nan
