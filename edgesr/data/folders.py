"""Benchmark folders as users have them: plain HR folders or BasicSR-style HR/LR pairs.

A plain folder of HR images is mod-cropped and its LR made with the MATLAB-compatible bicubic resize,
as the SR literature does. Two conventions circulate and differ by up to 0.02 dB at x2:

* ``matlab`` (default): HR mod-cropped to the scale, ``imresize`` of the uint8 image (MATLAB rounds
  between its two 1-D passes) — the SelfExSR/EDSR benchmark LR.
* ``basicsr``: HR mod-cropped to 12 (``GTmod12``), ``imresize`` of the double image, rounded once —
  BasicSR's benchmark pack, used by most BasicSR-era papers (EIMN's published numbers among them).

A paired layout (``HR/`` + ``LR/``, ``LR/X4``, ``LR_bicubic/X4``, ``LRbicx4`` ...) uses the LR the user
supplies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from ..errors import EdgesrError
from .imresize import imresize, modcrop
from .io import IMAGE_EXTENSIONS, load_image

LRConvention = Literal["matlab", "basicsr"]
LR_CONVENTIONS: tuple[str, ...] = ("matlab", "basicsr")
BASICSR_MODCROP = 12

HR_DIR_NAMES = ("HR", "hr", "GT", "gt", "GTmod12", "GTmod4", "original")
LR_DIR_PATTERNS = ("LR_bicubic/X{s}", "LR_bicubic/x{s}", "LR/X{s}", "LR/x{s}", "LRbicx{s}", "LR_x{s}",
                   "X{s}", "x{s}", "LR")


@dataclass(frozen=True)
class ImagePair:
    """One benchmark image: loaders rather than arrays, so a set never sits whole in memory."""

    name: str
    load_hr: Callable[[], np.ndarray]
    load_lr: Callable[[], np.ndarray]


@dataclass
class Benchmark:
    name: str
    scale: int
    pairs: list[ImagePair] = field(default_factory=list)
    source: str = ""
    lr_source: str = "matlab"

    def __len__(self) -> int:
        return len(self.pairs)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def hr_and_bicubic_lr(hr: np.ndarray, scale: int, convention: LRConvention = "matlab",
                      crop_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mod-crop the HR image and make its LR with MATLAB's bicubic, the literature's degradation.

    ``crop_to`` overrides the convention's mod-crop multiple (scale for ``matlab``, 12 for ``basicsr``).
    """
    if convention == "matlab":
        hr = modcrop(hr, crop_to or scale)
        return hr, imresize(hr, scale=1.0 / scale)
    if convention == "basicsr":
        hr = modcrop(hr, crop_to or BASICSR_MODCROP)
        lr = imresize(hr.astype(np.float64), scale=1.0 / scale)
        return hr, np.clip(np.round(lr), 0, 255).astype(np.uint8)
    raise EdgesrError(f"unknown LR convention {convention!r} (choose from {', '.join(LR_CONVENTIONS)})")


def _from_hr(name: str, load: Callable[[], np.ndarray], scale: int, convention: LRConvention = "matlab",
             crop_to: int | None = None) -> ImagePair:
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def pair() -> tuple[np.ndarray, np.ndarray]:
        # Built on first use and dropped by the evaluator after the image is done.
        if "p" not in cache:
            cache["p"] = hr_and_bicubic_lr(load(), scale, convention, crop_to)
        return cache["p"]

    return ImagePair(name, lambda: pair()[0], lambda: pair()[1])


def benchmark_from_arrays(name: str, images: Sequence[tuple[str, Callable[[], np.ndarray]]],
                          scale: int, source: str = "", convention: LRConvention = "matlab") -> Benchmark:
    return Benchmark(name, scale, [_from_hr(n, f, scale, convention) for n, f in images], source=source,
                     lr_source=convention)


def open_benchmark(folder: str | Path, scale: int, modcrop_to: int | None = None,
                   convention: LRConvention = "matlab") -> Benchmark:
    """Open a user's benchmark folder for ``scale``; every mistake is a one-line EdgesrError.

    HR-only folders get their LR from ``convention``; ``modcrop_to`` overrides its mod-crop multiple.
    """
    if convention not in LR_CONVENTIONS:
        raise EdgesrError(f"unknown LR convention {convention!r} (choose from {', '.join(LR_CONVENTIONS)})")
    if modcrop_to is not None and (modcrop_to <= 0 or modcrop_to % scale):
        raise EdgesrError(f"--modcrop {modcrop_to} must be a positive multiple of the scale {scale}")
    folder = Path(folder)
    if not folder.exists():
        raise EdgesrError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise EdgesrError(f"data path is not a folder: {folder}")
    name = folder.resolve().name
    hr_dir = next((folder / d for d in HR_DIR_NAMES if (folder / d).is_dir()), None)
    if hr_dir is None:
        files = list_images(folder)
        if not files:
            raise EdgesrError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
        pairs = [_from_hr(p.stem, _loader(p), scale, convention, modcrop_to) for p in files]
        return Benchmark(name, scale, pairs, source=str(folder), lr_source=convention)
    lr_dir = next((folder / pat.format(s=scale) for pat in LR_DIR_PATTERNS
                   if (folder / pat.format(s=scale)).is_dir()), None)
    hr_files = list_images(hr_dir)
    if not hr_files:
        raise EdgesrError(f"no images in {hr_dir}")
    if lr_dir is None or not list_images(lr_dir):
        pairs = [_from_hr(p.stem, _loader(p), scale, convention, modcrop_to) for p in hr_files]
        return Benchmark(name, scale, pairs, source=str(folder), lr_source=convention)
    return Benchmark(name, scale, _match_pairs(hr_files, list_images(lr_dir), scale, lr_dir),
                     source=str(folder), lr_source=str(lr_dir))


def _match_pairs(hr_files: list[Path], lr_files: list[Path], scale: int, lr_dir: Path) -> list[ImagePair]:
    lr_by_key = {_key(p.stem, scale): p for p in lr_files}
    pairs, missing = [], []
    for hr in hr_files:
        lr = lr_by_key.pop(_key(hr.stem, scale), None)
        if lr is None:
            missing.append(hr.name)
            continue
        pairs.append(ImagePair(hr.stem, _checked_hr(hr, lr, scale), _loader(lr)))
    if missing or lr_by_key:
        extra = sorted(p.name for p in lr_by_key.values())
        detail = []
        if missing:
            detail.append(f"{len(missing)} HR image(s) without LR, first {missing[0]!r}")
        if extra:
            detail.append(f"{len(extra)} LR image(s) without HR, first {extra[0]!r}")
        raise EdgesrError(f"cannot pair HR and LR in {lr_dir.parent}: " + "; ".join(detail))
    return pairs


def _key(stem: str, scale: int) -> str:
    """'baby', 'babyx4', 'baby_x4', 'baby_LRBI_x4' all name the same image."""
    return re.sub(rf"(_?LRBI)?[_-]?[xX]{scale}$", "", stem)


def _checked_hr(hr: Path, lr: Path, scale: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        img = load_image(hr)
        lr_h, lr_w = load_image(lr).shape[:2]
        if img.shape[0] < lr_h * scale or img.shape[1] < lr_w * scale:
            raise EdgesrError(f"{hr.name} is {img.shape[1]}×{img.shape[0]}, smaller than {scale}× its LR "
                              f"{lr.name} ({lr_w}×{lr_h})")
        return img[: lr_h * scale, : lr_w * scale]

    return load


def _loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: load_image(path)


def image_files(items: Sequence[str | Path], what: str = "image") -> list[Path]:
    """Image files from folders (sorted) and single files, in the given order; a one-line error for a missing
    path or an empty folder."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise EdgesrError(f"{what} folder has no images: {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise EdgesrError(f"{what} folder not found: {p}")
    return paths
