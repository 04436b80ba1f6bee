"""Training patches whose content depends only on (seed, sample index).

That one property gives bit-identical resume (the data position is just the step), identical batches
for any number of workers, and DDP ranks that together draw exactly the single-process global batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from ..data.folders import hr_and_bicubic_lr, list_images
from ..data.io import load_image
from ..errors import EdgesrError


class PatchDataset(Dataset):
    """Random aligned HR/LR crops. LR is made once per image with the MATLAB bicubic, not per step."""

    def __init__(self, folders: Sequence[str | Path], scale: int, patch_size: int, seed: int,
                 augment: bool = True, progress: bool = True, teacher: torch.nn.Module | None = None,
                 device: torch.device | str = "cpu"):
        self.scale, self.hr_patch, self.seed, self.augment = scale, patch_size, seed, augment
        self.lr_patch = patch_size // scale
        paths: list[Path] = []
        for folder in folders:
            folder = Path(folder)
            if folder.is_file():  # single images: e.g. the calibration half of a held-out split
                paths.append(folder)
                continue
            if not folder.is_dir():
                raise EdgesrError(f"training folder not found: {folder}")
            found = list_images(folder)
            if not found:
                raise EdgesrError(f"no images in training folder {folder}")
            paths += found
        self.images: list[tuple[np.ndarray, np.ndarray]] = []
        skipped = 0
        for p in tqdm(paths, desc="preparing LR", unit="img", disable=not progress, leave=False):
            hr, lr = hr_and_bicubic_lr(load_image(p), scale)
            if min(lr.shape[:2]) < self.lr_patch:
                skipped += 1
                continue
            self.images.append((hr, lr))
        if not self.images:
            raise EdgesrError(f"no training image is at least {patch_size}×{patch_size} pixels")
        self.skipped = skipped
        self.teacher_sr = _teacher_outputs(teacher, self.images, device, progress) if teacher is not None else None

    def __len__(self) -> int:  # indices are unbounded; the sampler decides how many are drawn
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(len(self.images)))
        hr, lr = self.images[k]
        h, w = lr.shape[:2]
        y, x = int(rng.integers(h - self.lr_patch + 1)), int(rng.integers(w - self.lr_patch + 1))
        s, p = self.scale, self.lr_patch
        crops = [lr[y:y + p, x:x + p], hr[y * s:(y + p) * s, x * s:(x + p) * s]]
        if self.teacher_sr is not None:
            crops.append(self.teacher_sr[k][y * s:(y + p) * s, x * s:(x + p) * s])
        if self.augment:
            flip, rot = bool(rng.integers(2)), int(rng.integers(4))
            crops = [_augment(c, flip, rot) for c in crops]
        return tuple(_chw(c) for c in crops)


class StepSampler(Sampler[int]):
    """Yields the sample indices of steps [start, stop) for one rank: step t owns t*B .. t*B+B-1."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise EdgesrError(f"data.batch_size {global_batch} is not divisible by {world} processes")
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, global_batch, rank, world

    def __iter__(self) -> Iterator[int]:
        per_rank = self.batch // self.world
        for step in range(self.start, self.stop):
            base = step * self.batch + self.rank * per_rank
            yield from range(base, base + per_rank)

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch // self.world)


def _augment(img: np.ndarray, flip: bool, rot: int) -> np.ndarray:
    if flip:
        img = img[:, ::-1]
    return np.rot90(img, rot)


def _chw(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return t.float().div_(255.0) if img.dtype == np.uint8 else t.float()


@torch.no_grad()
def _teacher_outputs(teacher: torch.nn.Module, images: list[tuple[np.ndarray, np.ndarray]],
                     device: torch.device | str, progress: bool) -> list[np.ndarray]:
    """The teacher's SR of every whole training image, once (float16 HWC): output-level KD then costs
    no teacher forward per step, and the target is the teacher's real whole-image prediction."""
    teacher = teacher.eval()
    out = []
    for _, lr in tqdm(images, desc="teacher SR", unit="img", disable=not progress, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float().div_(255.0)[None].to(device)
        out.append(teacher(x)[0].permute(1, 2, 0).cpu().numpy().astype(np.float16))
    return out
