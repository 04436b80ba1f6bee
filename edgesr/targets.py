"""The runtime targets, in one table: every list of targets, suffixes and precisions is read from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str                      # artifact file (or folder) suffix
    precisions: tuple[str, ...]
    quantizable: bool                # edgesr.quantize has an int8 scheme for it
    runs_on_host: bool               # its runtime runs on Linux (Core ML does not)
    phone: bool                      # edgesr device-script writes phone commands for it
    description: str
    int8_scheme: str = ""            # whose PT2E annotation its int8 follows (targets sharing one quantize alike)


TABLE: dict[str, Target] = {t.name: t for t in (
    Target("executorch", ".pte", ("fp32", "fp16", "int8"), True, True, True,
           "ExecuTorch .pte, XNNPACK-delegated; plus a BundledProgram (.bpte) with reference inputs/outputs for "
           "on-device verification", "xnnpack"),
    Target("tflite", ".tflite", ("fp32", "int8", "int16x8"), True, True, True,
           "LiteRT (TFLite) flatbuffer via litert-torch; runs with the LiteRT interpreter; int16x8 (int16 "
           "activations, int8 weights) through ai-edge-quantizer", "litert"),
    Target("coreml", ".mlpackage", ("fp32", "fp16", "int8"), True, False, False,
           "Core ML mlprogram; runs only on macOS/iOS (converted, not run, on Linux)", "xnnpack"),
    Target("onnx", ".onnx", ("fp32",), False, True, False,
           "ONNX (torch.onnx dynamo exporter) for onnxruntime"),
)}

NAMES: tuple[str, ...] = tuple(TABLE)
QUANTIZABLE: tuple[str, ...] = tuple(n for n, t in TABLE.items() if t.quantizable)
PHONE: tuple[str, ...] = tuple(n for n, t in TABLE.items() if t.phone)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int16x8")
CALIBRATED: tuple[str, ...] = ("int16x8",)   # precisions the export stage calibrates itself (needs images)


def suffix(target: str) -> str:
    return TABLE[target].suffix
