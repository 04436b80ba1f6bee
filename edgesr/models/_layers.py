"""The few pieces every architecture file shares (kept tiny on purpose)."""

from __future__ import annotations

import torch


def check_input(x: torch.Tensor, min_size: int, model: str) -> None:
    """Reject inputs a model cannot process with a message that names the limit.

    Comparisons stay on (possibly symbolic) sizes so that ``torch.export`` records a guard
    instead of specialising the graph.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{model} expects an N×3×H×W RGB tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}×{min_size} pixels, "
            f"got {x.shape[-2]}×{x.shape[-1]}"
        )
