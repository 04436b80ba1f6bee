"""The run recipe: which stages a job runs and their settings, validated key by key before any work.

Every stage section is optional; a stage runs when its section is present (``reparam: {}`` is enough).
Paths are relative to the working directory, like any CLI argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import RecipeError, apply_overrides, from_dict, read_yaml, to_dict
from ..targets import NAMES, QUANTIZABLE, TABLE

QUANT_TARGETS: tuple[str, ...] = QUANTIZABLE
EXPORT_TARGETS: tuple[str, ...] = NAMES
EXPORT_PRECISIONS: dict[str, tuple[str, ...]] = {n: t.precisions for n, t in TABLE.items()}


@dataclass
class ModelSpec:
    """The network that is deployed (the student, when there is a ``distill`` stage)."""

    name: str                           # a registry name, path/to/file.py:NAME or package.module:NAME
    scale: int = 4
    weights: str | None = None          # "zoo", a weights file, or none (random init; the start of distill)
    kwargs: dict[str, Any] = field(default_factory=dict)   # for the class or factory of a user network
    input_range: float = 1.0            # 255 for networks that take 0-255 inputs

    def ref(self) -> str | dict[str, Any]:
        """What the stages take: the name alone, or the name with its kwargs and input range."""
        if not self.kwargs and self.input_range == 1.0:
            return self.name
        return {"model": self.name, "kwargs": dict(self.kwargs), "input_range": float(self.input_range)}

    @property
    def label(self) -> str:
        return self.name.rpartition(":")[2] if ":" in self.name else self.name


@dataclass
class DataSpec:
    eval: list[Path] = field(default_factory=list)    # benchmark folders; empty: scikit-image sample photos
    calib: list[Path] = field(default_factory=list)   # HR folders for PTQ/QAT; empty: the other sample photos
    val: list[Path] = field(default_factory=list)     # HR folders the int8 search validates on (method auto)
    train: list[Path] = field(default_factory=list)   # HR folders for teacher training and distillation


@dataclass
class TeacherSpec:
    """The teacher: official/zoo weights as they are, or trained here (``train``: edgesr.train recipe keys)."""

    name: str
    scale: int | None = None            # defaults to model.scale
    weights: str | None = None          # "zoo" or a file; with ``train``, the initial weights
    train: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.weights is None and self.train is None:
            raise RecipeError("teacher: give weights (zoo or a file) or a train section")


@dataclass
class DistillSpec:
    """Train ``model`` against the teacher's SR (``train``: edgesr.train recipe keys except model/teacher)."""

    train: dict[str, Any]
    output_weight: float = 1.0
    feature_weight: float = 0.0


@dataclass
class ReparamSpec:
    shift: Literal["slice", "depthwise", "dense"] | None = None   # SCNet's shift; default: edgesr.reparam's


@dataclass
class QuantizeSpec:
    targets: list[str]
    method: Literal["ptq", "qat", "auto"] = "ptq"
    config: dict[str, Any] = field(default_factory=dict)    # edgesr.quantize.QuantConfig fields
    # method auto: the configuration is searched per target within this PSNR-Y drop (dB) on validation images
    # (data.val, or every 5th of data.calib; never the evaluation images), edgesr.quantize.auto
    budget_db: float = 0.05
    max_trials: int = 24
    time_limit: float | None = None     # seconds per target
    val_count: int = 32                 # validation images the budget is checked on (whole, or 128 px LR crops)
    # method auto: the N within-budget configurations with the most int8 MACs are exported and timed in the
    # target's runtime at export.input_size, interleaved with fp32; the fastest wins (0: the most int8 MACs wins)
    finalists: int = 3
    # per-target overrides of ``config``: each runtime's int8 scheme loses accuracy in different places
    # (SAFMN: ExecuTorch in its residual adds, LiteRT in its first/last convs), e.g. {tflite: {keep_float: [first]}};
    # ``method`` may be overridden per target too: {tflite: {method: ptq}}
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitivity: list[str] = field(default_factory=list)   # targets whose per-layer int8 sensitivity is measured
    sensitivity_layers: int | None = None   # N layers spread over the network (first, last included); null: all

    def validate(self) -> None:
        _known("quantize.targets", self.targets, QUANT_TARGETS)
        if not self.targets:
            raise RecipeError("quantize.targets: name at least one target")
        for target in self.sensitivity:
            if target not in self.targets:
                raise RecipeError(f"quantize.sensitivity: {target!r} is not in quantize.targets")
        for target, extra in self.per_target.items():
            if target not in self.targets:
                raise RecipeError(f"quantize.per_target: {target!r} is not in quantize.targets")
            if extra.get("method", "ptq") not in ("ptq", "qat", "auto"):
                raise RecipeError(f"quantize.per_target.{target}.method: expected ptq, qat or auto, "
                                  f"got {extra['method']!r}")
        if self.max_trials < 1 or (self.time_limit is not None and self.time_limit <= 0):
            raise RecipeError("quantize: max_trials and time_limit must be positive")
        if self.val_count < 1:
            raise RecipeError(f"quantize.val_count: expected 1 or more, got {self.val_count}")
        if self.finalists < 0:
            raise RecipeError(f"quantize.finalists: expected 0 or more, got {self.finalists}")
        if self.sensitivity_layers is not None and self.sensitivity_layers < 1:
            raise RecipeError("quantize.sensitivity_layers must be positive (or null: every layer)")

    def method_for(self, target: str) -> str:
        return str(self.per_target.get(target, {}).get("method", self.method))


@dataclass
class ExportSpec:
    targets: dict[str, list[str]]       # target -> precisions, e.g. {executorch: [fp32, int8]}
    input_size: list[int] = field(default_factory=lambda: [64, 64])   # LR H, W of the fixed-size artifacts

    def validate(self) -> None:
        _known("export.targets", list(self.targets), EXPORT_TARGETS)
        for target, precisions in self.targets.items():
            if not precisions:
                raise RecipeError(f"export.targets.{target}: name at least one precision")
            _known(f"export.targets.{target}", precisions, EXPORT_PRECISIONS[target])
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise RecipeError(f"export.input_size: expected [H, W] of positive integers, got {self.input_size}")


@dataclass
class CheckSpec:
    runs: int = 10                      # timed runs per latency measurement
    threads: int | None = 2             # runtime and torch CPU threads
    compare_images: int | None = 1      # images per dataset also run in PyTorch for parity (None: all)
    memory: bool = False                # peak-RSS probe (a fresh process per artifact)
    op_profile: bool = False            # per-op latency (ETDump / onnxruntime)
    pytorch: bool = True                # also evaluate the PyTorch fp32 model on whole images (the reference row)
    simulated: bool = True              # and each int8 fake-quant model in PyTorch ("pytorch-simulated" rows)
    crops: int = 1                      # images whose crop is kept for the report's side-by-side figures

    def validate(self) -> None:
        if self.runs < 1 or (self.threads is not None and self.threads < 1) or self.crops < 0:
            raise RecipeError("check: runs and threads must be positive, crops >= 0")
        if self.compare_images is not None and self.compare_images < 0:
            raise RecipeError("check.compare_images must be >= 0")


@dataclass
class ReportSpec:
    title: str | None = None
    sensitivity_layers: int = 15        # layers shown in the sensitivity plot


@dataclass
class RunRecipe:
    model: ModelSpec
    data: DataSpec = field(default_factory=DataSpec)
    teacher: TeacherSpec | None = None
    distill: DistillSpec | None = None
    reparam: ReparamSpec | None = None
    quantize: QuantizeSpec | None = None
    export: ExportSpec | None = None
    check: CheckSpec | None = None
    report: ReportSpec | None = field(default_factory=ReportSpec)
    seed: int = 0

    def validate(self) -> None:
        if self.model.scale not in (2, 3, 4):
            raise RecipeError(f"model.scale must be 2, 3 or 4, got {self.model.scale}")
        if self.distill is not None and self.teacher is None:
            raise RecipeError("distill needs a teacher section (the network the student learns from)")
        if self.teacher is not None:
            self.teacher.scale = self.teacher.scale or self.model.scale
            if self.teacher.scale != self.model.scale:
                raise RecipeError(f"teacher.scale {self.teacher.scale} differs from model.scale {self.model.scale}")
        if self.export is not None:
            quantized = set(self.quantize.targets) if self.quantize else set()
            for target, precisions in self.export.targets.items():
                if "int8" in precisions and target not in quantized:
                    raise RecipeError(f"export.targets.{target} asks for int8, which needs quantize.targets to "
                                      f"include {target}")


def train_recipe_dict(section: dict[str, Any], model: dict[str, Any], data_train: list[Path],
                      teacher: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """An ``edgesr.train`` recipe from a stage's ``train`` section plus what the run decides (model, teacher,
    default training folders)."""
    for key in ("model", "teacher"):
        if key in section:
            raise RecipeError(f"{where}.{key} is set by the run recipe, not inside {where}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.items()}
    out["model"] = model
    if teacher is not None:
        out["teacher"] = teacher
    data = out.setdefault("data", {})
    if not isinstance(data, dict):
        raise RecipeError(f"{where}.data: expected a mapping, got {type(data).__name__}")
    if not data.get("train"):
        if not data_train:
            raise RecipeError(f"{where}.data.train (or data.train) must name folders of HR training images")
        data["train"] = [str(p) for p in data_train]
    return out


def teacher_train_recipe(r: RunRecipe) -> Any:
    from ..train.recipe import TrainRecipe

    t = r.teacher
    assert t is not None and t.train is not None
    d = train_recipe_dict(t.train, {"name": t.name, "scale": t.scale, "weights": t.weights}, r.data.train, None,
                          "teacher.train")
    return from_dict(TrainRecipe, d, where="teacher.train")


def distill_train_recipe(r: RunRecipe, teacher_weights: str) -> Any:
    from ..train.recipe import TrainRecipe

    t, s = r.teacher, r.distill
    assert t is not None and s is not None
    teacher = {"name": t.name, "scale": t.scale, "weights": teacher_weights, "output_weight": s.output_weight,
               "feature_weight": s.feature_weight}
    d = train_recipe_dict(s.train, {"name": r.model.name, "scale": r.model.scale, "weights": r.model.weights},
                          r.data.train, teacher, "distill.train")
    return from_dict(TrainRecipe, d, where="distill.train")


def quant_config(r: RunRecipe, target: str | None = None) -> Any:
    """The QuantConfig for ``target``: ``quantize.config`` with ``quantize.per_target[target]`` on top."""
    from ..quantize.config import QuantConfig

    q = r.quantize
    if q is None:
        return QuantConfig()
    extra = {k: v for k, v in (q.per_target.get(target, {}) if target else {}).items() if k != "method"}
    where = f"quantize.per_target.{target}" if extra else "quantize.config"
    return from_dict(QuantConfig, {**q.config, **extra}, where=where)


def load_run_recipe(path: str | Path, overrides: list[str] | None = None,
                    data: list[str] | None = None) -> RunRecipe:
    """Read, override (``--set``), switch evaluation data (``--data``) and validate a run recipe.

    Everything a later stage needs from the recipe is checked here, before the first stage starts.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    if data:
        raw.setdefault("data", {})
        if not isinstance(raw["data"], dict):
            raise RecipeError(f"data: expected a mapping, got {type(raw['data']).__name__}")
        raw["data"]["eval"] = list(data)
    r = from_dict(RunRecipe, raw)
    _check_models(r)
    if r.teacher is not None and r.teacher.train is not None:
        teacher_train_recipe(r)
    if r.distill is not None:
        distill_train_recipe(r, "zoo")
    if r.quantize is not None:
        for target in r.quantize.targets:
            quant_config(r, target)  # from_dict validates
    return r


def recipe_dict(r: RunRecipe) -> dict[str, Any]:
    return to_dict(r)


def _check_models(r: RunRecipe) -> None:
    from ..errors import EdgesrError
    from ..models import ModelSpec, build, kind_of

    for where, name in (("model.name", r.model.name), ("teacher.name", r.teacher.name if r.teacher else None)):
        if name is None:
            continue
        try:
            kind = kind_of(name)
        except EdgesrError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        if kind in ("file", "module") and where == "model.name":  # import it now: a bad file fails before any work
            try:
                build(ModelSpec(name, r.model.scale, kwargs=dict(r.model.kwargs), input_range=r.model.input_range))
            except EdgesrError as exc:
                raise RecipeError(f"{where}: {exc}") from None
    for where, name, weights, scale in (
            ("model.weights", r.model.name, r.model.weights, r.model.scale),
            ("teacher.weights", r.teacher.name if r.teacher else "", r.teacher.weights if r.teacher else None,
             r.teacher.scale if r.teacher else 0)):
        if weights is None:
            continue
        if weights == "zoo":
            from ..zoo import available

            if (name, scale) not in available():
                have = ", ".join(f"{n} x{s}" for n, s in available()) or "none"
                raise RecipeError(f"{where}: the edgesr zoo has no weights for {name} x{scale} (available: {have})")
        elif not Path(weights).is_file():
            raise RecipeError(f"{where}: weights file not found: {weights}")


def _known(where: str, values: list[str], allowed: tuple[str, ...]) -> None:
    for v in values:
        if v not in allowed:
            raise RecipeError(f"{where}: unknown {v!r} (choose from {', '.join(allowed)})")
    if len(set(values)) != len(values):
        raise RecipeError(f"{where}: listed twice: {', '.join(sorted({v for v in values if values.count(v) > 1}))}")


__all__ = ["RunRecipe", "ModelSpec", "DataSpec", "TeacherSpec", "DistillSpec", "ReparamSpec", "QuantizeSpec",
           "ExportSpec", "CheckSpec", "ReportSpec", "load_run_recipe", "recipe_dict", "teacher_train_recipe",
           "distill_train_recipe", "quant_config", "QUANT_TARGETS", "EXPORT_TARGETS"]
