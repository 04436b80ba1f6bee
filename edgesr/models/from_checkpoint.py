"""Checkpoints of architectures edgesr has no code for, through spandrel (the SR community's library that
recognises an architecture from its state_dict keys and builds it).

spandrel is optional: it needs torchvision, and the torchvision wheel that matches torch 2.13.0 on PyPI is a
CUDA build whose extension does not load beside the CPU torch, so edgesr's pinned environment cannot carry it.
Where a user's environment has both, ``--model spandrel --weights net.pth`` works through every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError

__all__ = ["load_with_spandrel"]


def load_with_spandrel(path: str | Path) -> tuple[nn.Module, int, dict[str, Any]]:
    """(the plain network in eval mode, its scale, what spandrel says of it); [0, 1] RGB in and out."""
    try:
        from spandrel import ImageModelDescriptor, ModelLoader
    except Exception as exc:  # ImportError, or torchvision's extension failing to load
        raise CheckpointError(f"--model spandrel needs the spandrel library, which cannot be imported here "
                              f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                              "pip install spandrel with a torchvision matching your torch, or pass "
                              "--model path/to/file.py:NAME") from None
    try:
        desc = ModelLoader().load_from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - spandrel raises several kinds for unknown keys
        raise CheckpointError(f"no architecture spandrel knows matches the keys of {path} "
                              f"({type(exc).__name__})") from None
    if not isinstance(desc, ImageModelDescriptor) or desc.input_channels != 3 or desc.output_channels != 3:
        raise CheckpointError(f"{path}: spandrel found {getattr(desc, 'architecture', '?')}, which is not a "
                              "3-channel single-image SR network")
    req = desc.size_requirements
    info = {"architecture": str(getattr(desc.architecture, "id", desc.architecture)),
            "input_channels": desc.input_channels, "output_channels": desc.output_channels,
            "size_requirements": {"multiple_of": req.multiple_of, "minimum": req.minimum},
            "tiling": str(desc.tiling)}
    net = desc.model.eval()
    net.size_multiple, net.min_size = int(req.multiple_of or 1), int(req.minimum or 1)
    return net, int(desc.scale), info
