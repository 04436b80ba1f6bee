"""What an artifact is: targets, precisions, the sidecar JSON next to every artifact, and the small YAML
schemas of ``targets/`` (runtime targets and Android phone profiles).

Nothing here imports torch or a runtime, so the CLI can validate arguments instantly.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import from_dict, read_yaml, to_dict
from ..errors import EdgesrError
from ..io_utils import atomic_write_text, sha256_of
from ..targets import NAMES, PRECISIONS, TABLE

TARGETS: tuple[str, ...] = NAMES
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc")
SIDECAR_FORMAT = "edgesr-artifact"
SIDECAR_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "lr", "sr"

Target = Literal["executorch", "tflite", "coreml", "onnx"]
Precision = Literal["fp32", "fp16", "int8"]
Layout = Literal["nchw", "nhwc"]


class ExportError(EdgesrError):
    """An export request that cannot be honoured (bad target, size, precision, path ...)."""


# ------------------------------------------------------------------------------------ targets
@dataclass
class TargetConfig:
    """One runtime target (``targets/<name>.yaml``); the built-in defaults are the same values."""

    target: Target
    suffix: str
    precisions: list[str]
    layout: Layout = "nchw"
    backend: str | None = None                      # executorch: the delegate
    bundled_program: bool = False                   # executorch: also write a .bpte with reference I/O
    minimum_deployment_target: str | None = None    # coreml: iOS17, macOS14 ...
    compute_units: str | None = None                # coreml: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
    opset: int | None = None                        # onnx opset
    description: str = ""

    def validate(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ExportError(f"target {self.target}: unknown precision {bad[0]!r} (known: {', '.join(PRECISIONS)})")
        if self.backend not in (None, "xnnpack"):
            raise ExportError(f"target {self.target}: backend {self.backend!r} is not available (xnnpack)")
        if self.layout not in LAYOUTS or (self.layout == "nhwc" and self.target != "tflite"):
            raise ExportError(f"target {self.target}: layout {self.layout!r} (nhwc is available for tflite only)")
        if not self.suffix.startswith("."):
            raise ExportError(f"target {self.target}: suffix must start with '.', got {self.suffix!r}")
        if self.target == "coreml" and self.compute_units not in (None, "ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"):
            raise ExportError(f"target coreml: unknown compute_units {self.compute_units!r}")
        if self.minimum_deployment_target is not None and not re.fullmatch(r"(iOS|macOS|tvOS|watchOS)\d+",
                                                                         self.minimum_deployment_target):
            raise ExportError(f"target {self.target}: minimum_deployment_target looks like iOS17, "
                              f"got {self.minimum_deployment_target!r}")


_TARGET_DEFAULTS: dict[str, dict[str, Any]] = {
    "executorch": dict(backend="xnnpack", bundled_program=True),
    "coreml": dict(minimum_deployment_target="iOS17", compute_units="ALL"),
    "onnx": dict(opset=18),
}
BUILTIN_TARGETS: dict[str, dict[str, Any]] = {
    name: dict(target=name, suffix=t.suffix, precisions=list(t.precisions), description=t.description,
               **_TARGET_DEFAULTS.get(name, {}))
    for name, t in TABLE.items()
}


def target_config(target: str | Path) -> TargetConfig:
    """A target name (``executorch``, ``tflite``, ``coreml``, ``onnx``) or a ``targets/*.yaml`` file."""
    text = str(target)
    if text in BUILTIN_TARGETS:
        return from_dict(TargetConfig, dict(BUILTIN_TARGETS[text]))
    if text.endswith((".yaml", ".yml")):
        try:
            return from_dict(TargetConfig, read_yaml(text), where=Path(text).name)
        except EdgesrError as exc:
            raise ExportError(f"{text}: {exc}") from None
    raise ExportError(f"unknown target {text!r}; choose from {', '.join(TARGETS)} or pass a targets/*.yaml file")


# ---------------------------------------------------------------------------- phone profiles
@dataclass
class AndroidProfile:
    """An Android phone for ``edgesr device-script`` (``targets/android_*.yaml``)."""

    name: str
    serial: str = ""                       # adb serial; empty = the only connected device
    device_dir: str = "/data/local/tmp/edgesr"
    threads: int = 4
    cpu_mask: str = ""                     # taskset hex mask (e.g. big cores); empty = no pinning
    runs: int = 50
    warmup_runs: int = 5
    executor_runner: str = "cmake-out-android/executor_runner"
    benchmark_model: str = "android_aarch64_benchmark_model"
    description: str = ""

    def validate(self) -> None:
        if self.threads <= 0 or self.runs <= 0 or self.warmup_runs < 0:
            raise ExportError(f"profile {self.name}: threads and runs must be positive, warmup_runs >= 0")
        if not self.device_dir.startswith("/"):
            raise ExportError(f"profile {self.name}: device_dir must be an absolute path on the phone")
        if self.cpu_mask and not re.fullmatch(r"[0-9a-fA-F]+", self.cpu_mask):
            raise ExportError(f"profile {self.name}: cpu_mask must be a hex mask like 'f0', got {self.cpu_mask!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]*", self.serial):
            raise ExportError(f"profile {self.name}: serial has unexpected characters: {self.serial!r}")


def load_profile(path: str | Path | None) -> AndroidProfile:
    if path is None:
        return AndroidProfile(name="android")
    try:
        return from_dict(AndroidProfile, read_yaml(path), where=Path(path).name)
    except ExportError:
        raise
    except EdgesrError as exc:
        raise ExportError(f"{path}: {exc}") from None


# ----------------------------------------------------------------------------------- sidecar
@dataclass
class ArtifactInfo:
    """The sidecar ``ARTIFACT.json``: everything ``edgesr check`` needs to run and judge the artifact."""

    artifact: str                         # file (or .mlpackage folder) name, beside the sidecar
    target: str
    precision: str
    model: str
    scale: int
    input_size: list[int]                 # [H, W] of the LR input
    layout: str = "nchw"
    weights: str | None = None            # relative to the sidecar's folder when inside it
    weights_sha256: str | None = None
    param_key: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)   # edgesr.models.ModelSpec of the source network
    input_range: float = 1.0              # the artifact takes and gives RGB in [0, input_range]
    io_dtype: str = "float32"
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    rewrites: list[str] = field(default_factory=list)
    rewrite_max_abs_diff: float | None = None
    files: dict[str, str] = field(default_factory=dict)   # role -> file name beside the artifact
    source_sha256: str | None = None      # the lowered graph, its weights and the export settings (reuse key)
    delegation: dict[str, Any] | None = None
    target_config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    created: str = ""
    format: str = SIDECAR_FORMAT
    version: int = SIDECAR_VERSION

    @property
    def output_size(self) -> list[int]:
        return [self.input_size[0] * self.scale, self.input_size[1] * self.scale]

    def to_json(self) -> dict[str, Any]:
        return to_dict(self)


def sidecar_path(artifact: str | Path) -> Path:
    return Path(str(Path(artifact)) + ".json")


def write_sidecar(artifact: str | Path, info: ArtifactInfo) -> Path:
    if not info.created:
        info.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return readable(atomic_write_text(sidecar_path(artifact), json.dumps(info.to_json(), indent=2) + "\n"))


def readable(path: str | Path) -> Path:
    """Atomic writes go through ``mkstemp`` (mode 0600); artifacts are meant to be shared and pushed."""
    import os

    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def read_sidecar(artifact: str | Path) -> ArtifactInfo:
    """The artifact's sidecar, with every problem as a one-line ExportError."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise ExportError(f"artifact not found: {artifact}")
    side = sidecar_path(artifact)
    if not side.is_file():
        raise ExportError(f"{artifact} has no sidecar {side.name}; export it with `edgesr export` "
                          "(the sidecar records the model, weights and input size that check needs)")
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{side}: not an edgesr artifact sidecar")
    if data.get("version", 0) > SIDECAR_VERSION:
        raise ExportError(f"{side}: sidecar version {data['version']} is newer than this edgesr understands")
    known = {f.name for f in dataclasses.fields(ArtifactInfo)}
    return from_dict(ArtifactInfo, {k: v for k, v in data.items() if k in known}, where=side.name)


def resolve_beside(artifact: str | Path, name: str | None) -> Path | None:
    """A file named in the sidecar: relative names live beside the artifact."""
    if name is None:
        return None
    p = Path(name)
    return p if p.is_absolute() else Path(artifact).resolve().parent / p


def parse_input_size(text: str) -> tuple[int, int]:
    """``64x64`` / ``180x320`` (H×W) or a single ``64``; one-line error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x×,]\s*(\d+))?\s*", str(text))
    if not m:
        raise ExportError(f"--input-size expects HxW (e.g. 180x320) or N, got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h <= 0 or w <= 0:
        raise ExportError(f"--input-size must be positive, got {text!r}")
    if h * w > 4096 * 4096:
        raise ExportError(f"--input-size {h}x{w} is larger than any phone can run (4096x4096 max)")
    return h, w




def artifact_size(path: str | Path) -> int:
    """Bytes on disk; a Core ML .mlpackage is a folder, so sum its files."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


__all__ = ["TARGETS", "PRECISIONS", "LAYOUTS", "ExportError", "TargetConfig", "BUILTIN_TARGETS", "target_config",
           "AndroidProfile", "load_profile", "ArtifactInfo", "sidecar_path", "write_sidecar", "read_sidecar",
           "resolve_beside", "parse_input_size", "sha256_of", "artifact_size", "readable"]
