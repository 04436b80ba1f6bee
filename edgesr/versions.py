"""Versions of the libraries an artifact or a result depends on (recorded beside every number)."""

from __future__ import annotations

import contextlib
from importlib import metadata

from . import __version__

TARGET_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "executorch": ("executorch",), "tflite": ("litert-torch", "ai-edge-litert"),
    "coreml": ("coremltools",), "onnx": ("onnx", "onnxruntime", "onnxscript"),
}


def versions(*targets: str) -> dict[str, str]:
    """edgesr, torch and the distributions of ``targets`` (all targets when none is named)."""
    out = {"edgesr": __version__}
    dists = ["torch", "torchao"] + [d for t in (targets or tuple(TARGET_DISTRIBUTIONS))
                                    for d in TARGET_DISTRIBUTIONS.get(t, ())]
    for d in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[d] = metadata.version(d)
    return out
