"""What a user can choose when quantizing: one small dataclass, defaults that work for SR nets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import UsageError
from ..targets import QUANTIZABLE

TARGETS: tuple[str, ...] = QUANTIZABLE
OBSERVERS: tuple[str, ...] = ("histogram", "minmax", "moving_minmax", "percentile")

Target = Literal["executorch", "tflite", "coreml"]


@dataclass
class QuantConfig:
    """int8 options. The SR-aware ones (``keep_float``, ``clamp_output``, ``float_adds``, ``observer``) are
    measured one by one in ``benchmarks/int8_drop.py --ablate``.

    ``keep_float`` names modules left in floating point: module paths (``"head"``), or ``"first"`` / ``"last"``
    for the first / last convolution of the network (the image-facing layers SR is most sensitive to).
    """

    observer: str = "histogram"          # activation observer for PTQ calibration
    percentile: float = 99.99            # observer "percentile": clip activations to this percentile
    per_channel: bool = True             # per-output-channel symmetric weights (every target supports it)
    keep_float: list[str] = field(default_factory=list)
    clamp_output: bool = True            # SR output clamped to [0, 1] inside the graph: output scale ≈ 1/255
    float_norms: bool = True             # LayerNorm arithmetic (d², rsqrt) stays float: int8 cannot hold d²
    float_adds: bool = False             # leave residual adds unquantized (costs a dequant/quant pair each)
    # leave elementwise multiplies float: attention/modulation products (SAFMN's x * GELU(SAFM), gates) have
    # products whose range int8 holds poorly; no MACs move (convs stay int8), each costs a dequant/quant pair
    float_muls: bool = False
    # a kept-float conv keeps the activations that follow it float too (ReLU, GELU, pixel shuffle ...): the unit
    # of the int8 search's per-layer fallback, so a float layer's output is never requantized between them
    float_tails: bool = False
    # Outlier guard: a per-tensor int8 scale set by one huge channel rounds every other channel to a few
    # levels. Activations whose largest channel range (on the calibration data) exceeds ``outlier_ratio`` ×
    # the median channel's stay float with their producer and consumers. 0 turns the guard off.
    outlier_ratio: float = 0.0
    keep_nodes: list[str] = field(default_factory=list)  # graph nodes kept float (the guard fills it; stored)
    # Outlier migration (SmoothQuant-style, edgesr.quantize.migrate): imbalanced residual streams are divided per
    # channel by d = amax^a / wmax^(1-a) (a = ``migrate``, 0 = off) and the convolutions reading them multiplied by
    # d, so one per-tensor int8 scale holds them; runs before the outlier guard, which then finds fewer tensors.
    migrate: float = 0.0
    channel_scales: dict[str, list[float]] = field(default_factory=dict)  # d per group (filled from data; stored)
    # tflite only: one output quantizer where a float value enters int8 ops (on a copy when float ops read the
    # value too). Without it the converter merges per-consumer quantizers into the first one's range: SAFMN x4
    # .tflite 19 dB; EIMN-A's .tflite 0.021 dB off its fake-quant model. Off = per-consumer ranges, as XNNPACK.
    island_exits: bool = True
    # post-training algorithms on the weights (edgesr.quantize.weights), applied to int8 convolutions before
    # calibration: cross-layer equalization (ReLU / LeakyReLU / PReLU chains), per-channel weight scale search
    # (layer output MSE on the calibration inputs), bias correction of the weights' int8 error
    equalize: bool = False
    scale_search: bool = False
    bias_correction: bool = False
    calib_size: int = 16                 # calibration images (LR), each cropped to calib_patch if larger
    calib_patch: int = 96                # LR crop side for calibration (whole image when smaller)
    # QAT
    iterations: int = 300
    lr: float = 2e-5
    batch_size: int = 8
    patch_size: int = 96                 # HR patch side for QAT (LR = patch_size / scale)
    kd_weight: float = 1.0               # L1 to the full-precision model's SR (itself, or a teacher)
    gt_weight: float = 1.0               # L1 to ground truth
    freeze_observers_at: float = 0.0     # fraction of QAT steps after which activation ranges (from PTQ) stop moving
    seed: int = 0

    def validate(self) -> None:
        if self.observer not in OBSERVERS:
            raise UsageError(f"quantize: unknown observer {self.observer!r} (choose from {', '.join(OBSERVERS)})")
        if not 50.0 < self.percentile <= 100.0:
            raise UsageError(f"quantize: percentile must be in (50, 100], got {self.percentile}")
        for key in ("calib_size", "calib_patch", "iterations", "batch_size", "patch_size"):
            if int(getattr(self, key)) < 1:
                raise UsageError(f"quantize: {key} must be a positive integer, got {getattr(self, key)}")
        if self.outlier_ratio < 0 or 0 < self.outlier_ratio <= 1:
            raise UsageError(f"quantize: outlier_ratio must be 0 (off) or > 1, got {self.outlier_ratio}")
        if not 0.0 <= self.migrate <= 1.0:
            raise UsageError(f"quantize: migrate (strength) must be in [0, 1], got {self.migrate}")
        if self.lr <= 0:
            raise UsageError(f"quantize: lr must be positive, got {self.lr}")
        if not 0.0 <= self.freeze_observers_at <= 1.0:
            raise UsageError(f"quantize: freeze_observers_at must be in [0, 1], got {self.freeze_observers_at}")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise UsageError(f"unknown quantization target {target!r} (choose from {', '.join(TARGETS)})")
    return target


_WORDS = {"float_adds": "float residual adds", "float_muls": "float multiplies", "equalize": "cross-layer equalization",
          "scale_search": "weight scale search", "bias_correction": "bias correction"}


def describe(config: dict) -> str:
    """A configuration (``QuantConfig`` fields that differ from the defaults) in words, for verdicts and logs:
    'percentile 99.999 observer, outlier guard 4, weight scale search, float residual adds, first/last conv +
    4 layers float'. Data and QAT schedule settings are left out."""
    parts = []
    obs = config.get("observer")
    if obs:
        parts.append(f"percentile {config['percentile']:g} observer" if obs == "percentile" and "percentile" in config
                     else f"{obs} observer")
    if config.get("migrate"):
        parts.append(f"outlier migration {config['migrate']:g}")
    if config.get("outlier_ratio"):
        parts.append(f"outlier guard {config['outlier_ratio']:g}")
    parts += [w for k, w in _WORDS.items() if config.get(k)]
    if config.get("island_exits") is False:
        parts.append("per-consumer ranges")
    keep = list(config.get("keep_float") or [])
    if keep:
        ends = [k for k in ("first", "last") if k in keep]
        others = len(keep) - len(ends)
        what = "/".join(ends) + " conv" if ends else ""
        if others:
            what += (" + " if what else "") + f"{others} layer{'s' if others > 1 else ''}"
        parts.append(what + " float")
    return ", ".join(parts) or "defaults"
