"""Knowledge distillation from any registry model: output-level L1, optional feature-level L1.

Reused by quantization-aware training, where the teacher is the full-precision model itself.
Features are taken at the input of each model's upsampler (``feature_node``), where every family
has its final body features; a learnable 1×1 conv adapts the student's channels to the teacher's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def feature_module(model: nn.Module) -> nn.Module:
    """The submodule whose *input* is the model's final body feature map."""
    node = getattr(model, "feature_node", None)
    if node is None:
        raise ValueError(f"{type(model).__name__} declares no feature_node; feature distillation needs one")
    return model.get_submodule(node)


@contextmanager
def capture_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the feature map entering ``feature_module(model)`` during forward passes."""
    store: list[torch.Tensor] = []
    handle = feature_module(model).register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    try:
        yield store
    finally:
        handle.remove()


class Distiller(nn.Module):
    """Holds the frozen teacher and the trainable feature adapter; returns the KD loss terms."""

    def __init__(self, teacher: nn.Module, student: nn.Module, output_weight: float = 1.0,
                 feature_weight: float = 0.0):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.output_weight, self.feature_weight = output_weight, feature_weight
        self.adapter: nn.Module | None = None
        if feature_weight > 0:
            s_ch = _in_channels(feature_module(student))
            t_ch = _in_channels(feature_module(teacher))
            self.adapter = nn.Conv2d(s_ch, t_ch, 1)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics of the teacher never move
        return self

    @torch.no_grad()
    def teacher_forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.adapter is None:
            return self.teacher(lr), None
        with capture_features(self.teacher) as feats:
            out = self.teacher(lr)
        return out, feats[-1]

    def losses(self, student_sr: torch.Tensor, student_feat: torch.Tensor | None,
               teacher_sr: torch.Tensor, teacher_feat: torch.Tensor | None) -> dict[str, torch.Tensor]:
        terms = {"kd": self.output_weight * F.l1_loss(student_sr, teacher_sr)}
        if self.adapter is not None and student_feat is not None and teacher_feat is not None:
            terms["feat"] = self.feature_weight * F.l1_loss(self.adapter(student_feat), teacher_feat)
        return terms


def _in_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot find the input channels of {type(module).__name__}")
