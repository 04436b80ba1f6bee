"""The training recipe: what a teacher or student run needs, validated key by key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import RecipeError, apply_overrides, from_dict, read_yaml


@dataclass
class ModelSpec:
    name: str
    scale: int = 4
    weights: str | None = None          # initial weights: a file or "zoo"
    overrides: dict[str, Any] = field(default_factory=dict)   # kwargs of the class / factory
    input_range: float = 1.0            # 255 for networks that take 0-255 inputs
    expand: str | None = None           # train multi-branch: repvgg | ecb | sesr[:expansion=N] (edgesr.reparam)


@dataclass
class DataSpec:
    train: list[Path]                   # folders of HR images (LR made with MATLAB bicubic, once)
    val: list[Path] = field(default_factory=list)
    patch_size: int = 128               # HR patch side (BasicSR's gt_size); LR patch = patch_size / scale
    batch_size: int = 16                # global batch, split across DDP processes
    workers: int = 2
    augment: bool = True                # random flips and 90° rotations

    def validate(self) -> None:
        if self.patch_size <= 0 or self.batch_size <= 0 or self.workers < 0:
            raise RecipeError("data.patch_size and data.batch_size must be positive, data.workers >= 0")


@dataclass
class OptimSpec:
    lr: float = 1e-3                    # for the global batch: DDP does not rescale it
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    grad_clip: float | None = None

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise RecipeError("optim.betas must be two numbers")


@dataclass
class ScheduleSpec:
    kind: Literal["cosine", "multistep", "constant"] = "cosine"
    eta_min: float = 1e-6               # cosine floor
    milestones: list[int] = field(default_factory=list)   # multistep
    gamma: float = 0.5
    warmup: int = 0                     # linear warm-up iterations


@dataclass
class LossSpec:
    l1: float = 1.0                     # L1 to the ground truth
    fft: float = 0.0                    # SAFMN's FFT loss (L1 of rfft2 real/imag parts)


@dataclass
class TeacherSpec:
    """Knowledge distillation: the student also matches a frozen teacher."""

    name: str
    weights: str                        # a file or "zoo"
    scale: int | None = None            # defaults to the student's
    output_weight: float = 1.0          # L1(student SR, teacher SR)
    feature_weight: float = 0.0         # L1(adapter(student features), teacher features)
    precompute: bool | None = None      # teacher SR of whole images once (default: when no feature KD)

    def validate(self) -> None:
        if self.precompute and self.feature_weight > 0:
            raise RecipeError("teacher.precompute cannot be combined with teacher.feature_weight > 0 "
                              "(features need a teacher forward per step)")
        if self.precompute is None:
            self.precompute = self.feature_weight == 0


@dataclass
class TrainRecipe:
    model: ModelSpec
    data: DataSpec
    iterations: int
    optim: OptimSpec = field(default_factory=OptimSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    teacher: TeacherSpec | None = None
    ema: float = 0.999                  # 0 disables EMA
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"
    checkpoint_every: int = 500
    val_every: int = 0                  # 0: validate only at the end
    log_every: int = 10

    def validate(self) -> None:
        if self.iterations <= 0:
            raise RecipeError("iterations must be positive")
        if self.model.scale not in (2, 3, 4):
            raise RecipeError(f"model.scale must be 2, 3 or 4, got {self.model.scale}")
        if self.data.patch_size % self.model.scale:
            raise RecipeError(f"data.patch_size {self.data.patch_size} is not a multiple of the scale "
                              f"{self.model.scale}")
        if not 0.0 <= self.ema < 1.0:
            raise RecipeError("ema must be in [0, 1)")
        if self.teacher is not None:
            self.teacher.scale = self.teacher.scale or self.model.scale
            if self.teacher.scale != self.model.scale:
                raise RecipeError(f"teacher.scale {self.teacher.scale} differs from model.scale {self.model.scale}")
        if self.checkpoint_every <= 0 or self.log_every <= 0 or self.val_every < 0:
            raise RecipeError("checkpoint_every and log_every must be positive, val_every >= 0")


def load_train_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    """Read a training recipe (relative paths are relative to the working directory, like any CLI)."""
    return from_dict(TrainRecipe, apply_overrides(read_yaml(path), overrides))
