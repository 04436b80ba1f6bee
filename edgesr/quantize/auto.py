"""int8 that finds its own configuration within an accuracy budget: ``auto_quantize(model, target, ...)``.

The budget is the PSNR-Y drop (dB, vs HR, border = scale, uint8 output) of the fake-quant model against the
fp32 model on *validation* images, never the calibration images. The search is greedy, not a grid:

1. PTQ with the defaults; where the calibration data shows outlier channels, the outlier guard (ratio 8, then 4),
   as the base of what follows; then, one at a time and kept only when they help: the observer (percentile at
   99.99 and 99.999 among them); the weight algorithms that keep every op int8 (cross-layer equalization where
   the network has ReLU-family conv pairs, the per-channel weight scale search, bias correction); and, while over
   budget, float residual adds, float multiplies, the first/last convolution in float (these first when the
   drop is more than ``FAR_FACTOR`` times the budget: every network measured that far over needed them);
2. float fallback per layer on top of those, in the order of measured sensitivity (each layer alone in int8, dB
   vs HR), the number of float layers found by bisection on the sorted list; within the budget, the float
   options no longer needed are dropped again, the residual streams the guard holds float are evened out by
   outlier migration instead (``edgesr.quantize.migrate``) and the guard loosened (4 -> 8 -> off);
3. QAT distilled from the fp32 model from the most accurate configuration, its activation ranges starting
   where that configuration's PTQ put them, when PTQ cannot reach the budget and training images were given.

Every trial is cached (keyed by the model's weights, the data, the target and the configuration), so a re-run
resumes; all trials go to ``trials.jsonl``. Within the budget the finalists (most int8 MACs, fewest float ops)
are timed by the ``latency`` callable the caller passes (the export stage's, which runs the artifacts in the
target's runtime, interleaved with fp32) and the fastest is chosen; without it, the one with the most int8 MACs.
None reaching the budget, the most accurate one is chosen (of those timed, the most accurate whose artifact
follows its fake-quant model) and marked over budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import UsageError
from ..io_utils import atomic_write_text
from ..models import scale_of, size_multiple
from .config import OBSERVERS, QuantConfig, check_target

__all__ = ["AutoResult", "Trial", "auto_quantize", "validation_pairs", "split_images", "int8_mac_share",
           "drop_db", "mean_drop_db", "drop_se_db", "artifact_drop_db", "recipe_yaml", "layer_drops"]


# ---------------------------------------------------------------------------------------- data
def split_images(folders: Sequence[str | Path], every: int = 5) -> tuple[list[Path], list[Path]]:
    """(calibration, validation) image paths: every ``every``-th image of the sorted folders is held out for
    validation, the rest calibrate. Disjoint by construction, deterministic."""
    from ..data.folders import image_files

    paths = image_files(folders, "quantize: image")
    val = [p for i, p in enumerate(paths) if i % every == every - 1]
    calib = [p for i, p in enumerate(paths) if i % every != every - 1]
    if not val or not calib:
        raise UsageError(f"quantize --auto: {len(paths)} images cannot be split into calibration and validation; "
                         "give more images or --val DIR")
    return calib, val


VAL_COUNT, VAL_SIDE = 32, 128
FAR_FACTOR = 3.0  # a drop above FAR_FACTOR x the budget tries the float options before the free ones
MIGRATE_STRENGTH = 0.5  # outlier migration d = amax^a / wmax^(1-a): SmoothQuant's balance of activations and weights


def validation_pairs(images: Sequence[str | Path], scale: int, count: int = VAL_COUNT, lr_side: int = VAL_SIDE,
                     mult: int = 1) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(LR tensor, HR uint8) pairs: ``count`` images spread over ``images``, each whole or, when larger, an HR
    centre crop of ``lr_side`` × scale (rounded to the model's size multiple), with its MATLAB-bicubic LR.

    Many images, not a few crops: per-image int8 drops are heavy-tailed (SAFMN NTIRE x4, one configuration:
    0.055 dB on 8 crops of 64 px, 0.140 on 24, 0.119 on 16 whole images, one image 1.4 dB), and a budget checked
    on a few must still hold on images the search never saw."""
    from ..data.folders import hr_and_bicubic_lr
    from ..data.io import load_image, to_tensor
    from .ptq import _spread

    paths = _spread([Path(p) for p in images], count)
    pairs = []
    for p in paths:
        hr = load_image(p)
        side = max(mult, (lr_side // mult) * mult) * scale
        h, w = hr.shape[:2]
        ch, cw = min(h, side) // (scale * mult) * scale * mult, min(w, side) // (scale * mult) * scale * mult
        if ch == 0 or cw == 0:
            continue
        y, x = (h - ch) // 2, (w - cw) // 2
        hr_c, lr = hr_and_bicubic_lr(np.ascontiguousarray(hr[y:y + ch, x:x + cw]), scale)
        pairs.append((to_tensor(lr), hr_c))
    if not pairs:
        raise UsageError("quantize --auto: no validation image is large enough")
    return pairs


@torch.no_grad()
def _psnrs(model: Callable[[torch.Tensor], torch.Tensor], pairs: Sequence[tuple[torch.Tensor, np.ndarray]], scale: int) -> list[float]:
    from ..data.io import to_uint8
    from ..metrics import psnr_y

    return [min(psnr_y(to_uint8(model(lr)), hr, scale), 100.0) for lr, hr in pairs]


MEASURE = "max(mean, mean of the best-reconstructed half)"  # what drop_db computes: part of each trial's cache key


def drop_db(fp32: Sequence[float], q: Sequence[float]) -> float:
    """The budget's measure: the mean over images of PSNR-Y(fp32) − PSNR-Y(int8) (positive means int8 is worse),
    or, when larger, that mean over the half of the images fp32 reconstructs best.

    The same int8 noise costs the most dB where fp32's own error is smallest, and a budget met on average over
    held-out training crops did not hold on such images: SAFMN NTIRE x4, one configuration, 0.039 dB over 64
    held-out T91/BSD200 images, 0.051 over their best-reconstructed half, Set5 0.065, B100 0.038."""
    d = np.asarray(fp32, dtype=np.float64) - np.asarray(q, dtype=np.float64)
    if len(d) < 4:
        return float(d.mean())
    best = np.argsort(-np.asarray(fp32, dtype=np.float64), kind="stable")[: (len(d) + 1) // 2]
    return float(max(d.mean(), d[best].mean()))


PARITY_CAP_DB = 6.0  # an artifact this much further from fp32 than its fake-quant model computes something else


def artifact_drop_db(drop: float, artifact_psnr: float, fake_quant_psnr: float) -> float:
    """The validation drop scaled by how much more error the artifact has against fp32 than its fake-quant model
    (MSE ratio): for drops of hundredths of a dB the PSNR-Y drop grows in proportion to the int8 error."""
    return max(drop, drop * 10 ** ((fake_quant_psnr - artifact_psnr) / 10))


def mean_drop_db(fp32: Sequence[float], q: Sequence[float]) -> float:
    """Mean over images of PSNR-Y(fp32) − PSNR-Y(int8)."""
    return float(np.mean(np.asarray(fp32, dtype=np.float64) - np.asarray(q, dtype=np.float64)))


def drop_se_db(fp32: Sequence[float], q: Sequence[float]) -> float | None:
    """Standard error of :func:`mean_drop_db` over the validation images (None below 2)."""
    from ..metrics import paired_drop_se

    return paired_drop_se(fp32, q)


# ------------------------------------------------------------------------------------------ MACs
def _conv_macs(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, int]:
    """MACs of every convolution node of a captured graph at input ``x``."""
    from torch.fx.passes.shape_prop import ShapeProp

    from .quantizers import conv_nodes

    ShapeProp(gm).propagate(x)
    macs = {}
    for n in conv_nodes(gm):
        out = n.meta.get("tensor_meta")
        w = n.args[1].meta.get("tensor_meta") if hasattr(n.args[1], "meta") else None
        if out is None or w is None:
            continue
        k = math.prod(w.shape[1:]) if "transpose" not in str(n.target) else w.shape[0] * math.prod(w.shape[2:])
        macs[n.name] = int(math.prod(out.shape) * k)
    return macs


def int8_mac_share(model: nn.Module, cfg: QuantConfig, side: int = 32, target: str | None = None) -> float:
    """The share of the network's convolution MACs that run in int8 under ``cfg`` (the speed proxy)."""
    return _int8_profile(model, cfg, side, target)[0]


def _int8_profile(model: nn.Module, cfg: QuantConfig, side: int = 32, target: str | None = None) -> tuple[float, int]:
    """(int8 share of conv MACs, ops left float): every float island costs a dequantize/quantize pair."""
    from .ptq import captured
    from .quantizers import float_nodes

    mult = size_multiple(model)
    side = max(mult, side // mult * mult)
    gm = captured(model, cfg, target)
    macs = _conv_macs(gm, torch.rand(1, 3, side, side))
    keep = {n.name for n in float_nodes(gm, cfg)}
    total = sum(macs.values())
    share = 1.0 if total == 0 else sum(v for k, v in macs.items() if k not in keep) / total
    return share, len(keep)


# ---------------------------------------------------------------------------------------- trials
@dataclass
class Trial:
    """One configuration tried: its validation drop and int8 share (and latency, for the finalists)."""

    name: str
    config: dict[str, Any]                # QuantConfig fields that differ from the defaults
    drop_db: float
    int8_mac_share: float
    float_ops: int = 0                    # ops left float (islands cost a dequantize/quantize pair each)
    mean_drop_db: float | None = None     # plain mean over the validation images (drop_db is the budget's measure)
    mode: str = "ptq"
    seconds: float = 0.0
    cached: bool = False
    within_budget: bool = False
    latency: dict[str, Any] | None = None
    # standard error of the mean drop over the validation images: how finely they resolve the budget
    drop_se_db: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AutoResult:
    model: nn.Module                      # the chosen fake-quant model (edgesr.quantize.QuantizedSR)
    chosen: Trial
    trials: list[Trial]
    budget_db: float
    within_budget: bool
    fp32_psnr_y: float
    validation_images: int
    calibration_images: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"budget_db": self.budget_db, "within_budget": self.within_budget, "chosen": self.chosen.to_json(),
                "fp32_psnr_y": self.fp32_psnr_y, "validation_images": self.validation_images,
                "calibration_images": self.calibration_images, "trials": [t.to_json() for t in self.trials],
                "notes": self.notes}


def _overrides(cfg: QuantConfig) -> dict[str, Any]:
    base = dataclasses.asdict(QuantConfig())
    return {k: v for k, v in dataclasses.asdict(cfg).items() if v != base[k] and k != "keep_nodes"}


def recipe_yaml(target: str, result: AutoResult) -> str:
    """The recipe section that reproduces the chosen configuration without a search."""
    import yaml

    section: dict[str, Any] = {"targets": [target], "method": result.chosen.mode}
    if result.chosen.config:
        section["config"] = dict(result.chosen.config)
    return yaml.safe_dump({"quantize": section}, sort_keys=False).rstrip()


def _fingerprint(model: nn.Module, calib: Sequence[Any], pairs: Sequence[tuple[torch.Tensor, np.ndarray]],
                 target: str) -> str:
    """The trials' cache key: weights, data, and the target's int8 scheme on its graph; targets that quantize
    the same graph alike (ExecuTorch and Core ML: XNNPACK's annotation) share their trials; a target's annotation
    revision (``quantizers.ANNOTATION_REVISIONS``) retires its trials cached under an older rule."""
    from ..targets import TABLE
    from .graph import capture
    from .quantizers import ANNOTATION_REVISIONS

    h = hashlib.sha256(TABLE[target].int8_scheme.encode() or target.encode())
    if target in ANNOTATION_REVISIONS:
        h.update(f"revision {ANNOTATION_REVISIONS[target]}".encode())
    h.update(capture(model, target=target).code.encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for t in list(calib) + [lr for lr, _ in pairs]:
        h.update(t.numpy().tobytes() if isinstance(t, torch.Tensor) else str(t).encode())
    return h.hexdigest()


class _Search:
    def __init__(self, model: nn.Module, target: str, calib: list[torch.Tensor],
                 pairs: list[tuple[torch.Tensor, np.ndarray]], budget: float, cache: Path | None, max_trials: int,
                 deadline: float | None, progress: bool, reserved: int = 0) -> None:
        self.model, self.target, self.calib, self.pairs, self.budget = model, target, calib, pairs, budget
        self.scale = scale_of(model)
        self.fp32 = _psnrs(model, pairs, self.scale)
        self.cache, self.max_trials, self.deadline = cache, max_trials, deadline
        self.reserved = min(reserved, max_trials - 1)  # trials kept for the last step (QAT)
        self.key = _fingerprint(model, calib, pairs, target)
        self.trials: list[Trial] = []
        self.bar = tqdm(total=max_trials, desc=f"int8 search {target}", unit="trial", disable=not progress)

    def exhausted(self, last: bool = False) -> bool:
        """Out of trials (cached ones count: a re-run repeats the search, free, and goes no further) or of time
        (a search cut by the time limit resumes from its cache on a re-run)."""
        limit = self.max_trials - (0 if last else self.reserved)
        return len(self.trials) >= limit or (self.deadline is not None and time.monotonic() > self.deadline)

    def _path(self, cfg: QuantConfig, mode: str) -> Path | None:
        if self.cache is None:
            return None
        blob = json.dumps({"model": self.key, "mode": mode, "config": dataclasses.asdict(cfg), "measure": MEASURE},
                          sort_keys=True)
        return self.cache / "trials" / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"

    def run(self, name: str, cfg: QuantConfig, mode: str = "ptq",
            make: Callable[[QuantConfig], nn.Module] | None = None, last: bool = False) -> Trial | None:
        """Evaluate one configuration (from the cache when it was tried before)."""
        path = self._path(cfg, mode)
        if path is not None and path.is_file():
            trial = Trial(**{**json.loads(path.read_text()), "cached": True, "name": name})
        else:
            if self.exhausted(last):
                return None
            from .ptq import ptq

            t0 = time.perf_counter()
            q = make(cfg) if make is not None else ptq(self.model, self.target, self.calib, cfg)
            psnrs = _psnrs(q, self.pairs, self.scale)
            drop, mean = drop_db(self.fp32, psnrs), mean_drop_db(self.fp32, psnrs)
            from ..config import from_dict

            applied = from_dict(QuantConfig, dict(q.config))  # with the outlier guard's kept nodes
            share, floats = _int8_profile(self.model, applied, target=self.target)
            trial = Trial(name, _overrides(cfg), drop, share, floats, mean, mode, round(time.perf_counter() - t0, 2),
                          drop_se_db=drop_se_db(self.fp32, psnrs))
            if path is not None:
                atomic_write_text(path, json.dumps(trial.to_json(), indent=1) + "\n")
            self.bar.update(1)
        trial.within_budget = trial.drop_db <= self.budget
        self.trials.append(trial)
        self.bar.set_postfix(drop=f"{trial.drop_db:.3f}", int8=f"{trial.int8_mac_share:.0%}")
        return trial


def layer_drops(model: nn.Module, target: str, calib: Sequence[torch.Tensor],
                pairs: Sequence[tuple[torch.Tensor, np.ndarray]], cfg: QuantConfig,
                layers: Sequence[str] | None = None, progress: bool = False, calib_limit: int = 2,
                pair_limit: int = 4, deadline: float | None = None) -> list[dict[str, Any]]:
    """Per layer: the PSNR-Y drop vs HR (dB) when only that layer is int8 (everything else float), worst first.

    One capture serves every layer; each is calibrated on ``calib_limit`` inputs and scored on ``pair_limit``
    validation pairs (the order matters here, not the last 0.01 dB). Layers not reached before ``deadline``
    come last with ``drop_db`` None."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from .graph import capture, run_padded
    from .ptq import calibrate, convert
    from .quantizers import make_quantizer, module_path
    from .sensitivity import layer_names

    scale = scale_of(model)
    pairs = list(pairs)[:pair_limit]
    fp32 = _psnrs(model, pairs, scale)
    names = list(layers) if layers is not None else layer_names(model, cfg)
    base = capture(model, clamp_output=cfg.clamp_output, target=target)
    inputs = list(calib)[:calib_limit]
    rows, late = [], []
    for name in tqdm(names, desc="sensitivity", unit="layer", disable=not progress):
        if deadline is not None and time.monotonic() > deadline:
            late.append({"layer": name, "drop_db": None})
            continue

        def keep(gm: torch.fx.GraphModule, name: str = name) -> set:
            return {n for n in gm.graph.nodes if n.op == "call_function"
                    and not (module_path(n) == name or module_path(n).startswith(name + "."))}

        prepared = prepare_pt2e(copy.deepcopy(base), make_quantizer(target, cfg, keep=keep))
        prepared.capture_min_size = getattr(base, "capture_min_size", 1)
        calibrate(prepared, inputs)
        q = convert(prepared, target)
        q.capture_min_size = prepared.capture_min_size
        rows.append({"layer": name, "drop_db": mean_drop_db(fp32, _psnrs(lambda x: run_padded(q, x), pairs, scale))})
    rows.sort(key=lambda r: -r["drop_db"])
    return rows + late


def _float_layers(model: nn.Module, target: str, cfg: QuantConfig, calib: Sequence[torch.Tensor]) -> set[str]:
    """Module paths whose every convolution ``cfg`` already keeps float (named, first/last, or held by the
    outlier guard): the per-layer fallback skips them."""
    from .ptq import captured, guard_outliers
    from .quantizers import conv_nodes, float_nodes, module_path

    applied, _ = guard_outliers(model, cfg, list(calib), target)
    gm = captured(model, applied, target)
    floats = float_nodes(gm, applied)
    by_path: dict[str, list[bool]] = {}
    for n in conv_nodes(gm):
        by_path.setdefault(module_path(n), []).append(n in floats)
    return {p for p, f in by_path.items() if all(f)}


# ------------------------------------------------------------------------------------------ search
def auto_quantize(model: nn.Module, target: str, calib_images: Sequence[Any], val_images: Sequence[Any],
                  budget_db: float, *, config: QuantConfig | None = None, max_trials: int = 24,
                  time_limit: float | None = None, cache_dir: str | Path | None = None,
                  qat_images: Sequence[str | Path] | None = None, val_count: int = VAL_COUNT, val_side: int = VAL_SIDE,
                  latency: Callable[[nn.Module], dict[str, Any] | None] | None = None, finalists: int = 3,
                  progress: bool = False) -> AutoResult:
    """Search the int8 configuration for ``target`` whose validation drop is within ``budget_db``; return the
    fastest of those (or the most accurate, marked over budget).

    ``latency(int8_model)`` times one candidate in the target's runtime (``{"fp32_ms", "int8_ms", "speedup"}``,
    or None where the runtime cannot run here); the ``finalists`` within budget with the most int8 MACs are timed
    and the fastest wins. Without it the most int8 MACs win (the speed proxy)."""
    from .graph import reuse_captures

    with reuse_captures():  # one torch.export for every trial
        return _auto_quantize(model, target, calib_images, val_images, budget_db, config, max_trials, time_limit,
                              cache_dir, qat_images, val_count, val_side, latency, finalists, progress)


def _auto_quantize(model: nn.Module, target: str, calib_images: Sequence[Any], val_images: Sequence[Any],
                   budget_db: float, config: QuantConfig | None, max_trials: int, time_limit: float | None,
                   cache_dir: str | Path | None, qat_images: Sequence[str | Path] | None, val_count: int,
                   val_side: int, latency: Callable[[nn.Module], dict[str, Any] | None] | None, finalists: int,
                   progress: bool) -> AutoResult:
    from ..config import from_dict
    from .graph import capture
    from .migrate import plan as migrate_plan
    from .outliers import find_outliers
    from .ptq import calibration_inputs, ptq
    from .qat import qat

    check_target(target)
    base = config or QuantConfig()
    base.validate()
    if getattr(model, "quantized", False):
        raise UsageError("quantize --auto: the model is already quantized")
    model = model.eval()
    scale, mult = scale_of(model), size_multiple(model)
    calib = calibration_inputs(list(calib_images), scale, base, mult)
    pairs = (list(val_images) if val_images and isinstance(val_images[0], tuple)
             else validation_pairs(list(val_images), scale, val_count, val_side, mult))
    cache = Path(cache_dir) if cache_dir is not None else None
    deadline = time.monotonic() + time_limit if time_limit else None
    s = _Search(model, target, calib, pairs, float(budget_db), cache, max_trials, deadline, progress,
                reserved=1 if qat_images else 0)  # QAT, the last step, keeps its trial
    notes: list[str] = []

    def better(a: Trial | None, b: Trial | None) -> bool:  # noqa: D401
        """a improves on b: lower drop (the greedy steps trade int8 share only when accuracy needs it)."""
        return a is not None and (b is None or a.drop_db < b.drop_db - 1e-4)

    best = s.run("defaults", base)
    cfg = base
    plain = base  # the configuration before any option that moves ops to float (the fallback starts from it)
    # 0. outlier channels in the calibration data: the guard first, as the base of everything after it (a
    #    per-tensor int8 scale sized for one huge channel breaks every other option; EIMN-A loses 3.5 dB without)
    graph = capture(model, clamp_output=cfg.clamp_output, target=target)  # read-only: outliers, CLE pairs
    outliers = find_outliers(graph, calib, 8.0) if base.outlier_ratio == 0 else []
    # residual streams that outlier migration can even out (none in SAFMN NTIRE: its imbalance is elsewhere)
    migratable = bool(outliers) and not base.migrate and bool(migrate_plan(graph, calib, MIGRATE_STRENGTH))
    if outliers:
        cand = dataclasses.replace(base, outlier_ratio=8.0)
        t = s.run("outlier guard 8", cand)
        if better(t, best):
            best, cfg, plain = t, cand, cand
            tighter = dataclasses.replace(base, outlier_ratio=4.0)  # more activations judged imbalanced
            t = s.run("outlier guard 4", tighter)
            if better(t, best):
                best, cfg, plain = t, tighter, tighter
    # 1. one option at a time, kept when it lowers the drop. The free options (observers, weight algorithms: no
    #    op leaves int8) come first, then, while over budget, the float options. Far over budget (more than
    #    FAR_FACTOR x the budget) the float options go first: every network measured that far over needed them
    #    (SAFMN NTIRE, EIMN-A, LAMNet), so a search cut by --max-trials or --time-limit gets near the budget
    #    sooner; 1b then drops the float options the free ones made unnecessary.
    from .weights import equalization_pairs

    free: list[tuple[str, dict[str, Any]]] = [(f"observer {obs}", {"observer": obs})
                                              for obs in OBSERVERS if obs != base.observer]
    free.append(("observer percentile 99.999", {"observer": "percentile", "percentile": 99.999}))
    if equalization_pairs(graph):
        free.append(("cross-layer equalization", {"equalize": True}))
    free += [("weight scale search (layer output MSE)", {"scale_search": True}),
             ("bias correction", {"bias_correction": True})]
    floats: list[tuple[str, Callable[[QuantConfig], QuantConfig]]] = [
        ("float residual adds", lambda c: dataclasses.replace(c, float_adds=True)),
        ("float elementwise multiplies", lambda c: dataclasses.replace(c, float_muls=True)),
        ("first/last conv float", lambda c: dataclasses.replace(
            c, keep_float=list(dict.fromkeys([*c.keep_float, "first", "last"]))))]

    def free_options() -> None:
        nonlocal best, cfg, plain
        for name, change in free:
            cand = dataclasses.replace(cfg, **change)
            if cand == cfg:
                continue
            t = s.run(name, cand)
            if better(t, best):
                best, cfg, plain = t, cand, dataclasses.replace(plain, **change)

    def float_options() -> None:
        nonlocal best, cfg
        for name, change in floats:
            if best is None or best.within_budget:
                break
            cand = change(cfg)
            t = s.run(name, cand)
            if better(t, best):
                best, cfg = t, cand

    if best is not None and best.drop_db > FAR_FACTOR * max(s.budget, 0.0):
        float_options()
        free_options()
    else:
        free_options()
        float_options()
    # 1b. within the budget: drop again, one at a time, the options that are no longer needed (fewer float islands)
    def loosen_guard(c: QuantConfig) -> QuantConfig:
        """Guard 4 -> 8: fewer activations judged imbalanced, so fewer float islands (EIMN-A: 43 % vs 16 % of
        its MACs float); the other options may have bought back what the tighter guard was for."""
        return dataclasses.replace(c, outlier_ratio=8.0) if 0 < c.outlier_ratio < 8.0 else c

    def migrate(c: QuantConfig) -> QuantConfig:
        """Outlier migration where the guard holds activations float: the residual streams it evens out need no
        guard, so their readers go back to int8 (EIMN-A, guard 4: 57 % -> 77 % int8 MACs, 0.013 -> 0.015 dB)."""
        return dataclasses.replace(c, migrate=MIGRATE_STRENGTH) if migratable and c.outlier_ratio else c

    def drop_unneeded(best: Trial, cfg: QuantConfig) -> tuple[Trial, QuantConfig]:
        for name, undo in (("without float residual adds", lambda c: dataclasses.replace(c, float_adds=False)),
                           ("without float elementwise multiplies",
                            lambda c: dataclasses.replace(c, float_muls=False)),
                           ("outlier migration", migrate),
                           ("outlier guard 8", loosen_guard),
                           ("without outlier guard", lambda c: dataclasses.replace(c, outlier_ratio=0.0)),
                           ("without first/last conv float", lambda c: dataclasses.replace(
                               c, keep_float=[k for k in c.keep_float
                                              if k not in ("first", "last") or k in base.keep_float]))):
            cand = undo(cfg)
            if cand == cfg or (name == "without outlier guard" and loosen_guard(cfg) != cfg):
                continue  # the guard goes only where the looser one held (it was tried just before)
            t = s.run(f"{best.name}, {name}", cand)
            if t is not None and t.within_budget:
                best, cfg = t, cand
        return best, cfg

    if best is not None and best.within_budget and (cfg is not plain or cfg.outlier_ratio):
        best, cfg = drop_unneeded(best, cfg)
    # 2. float fallback per layer in sensitivity order, on top of the options that helped (the floor, every conv
    #    float, is then the most accurate PTQ can be), bisection on how many layers stay float; skipped when a
    #    configuration within the budget already runs nearly all MACs in int8
    within = [t for t in s.trials if t.within_budget]
    if (not within or max(t.int8_mac_share for t in within) < 0.9) and not s.exhausted():
        from .sensitivity import layer_names

        if within:  # within the budget already: the fallback starts from the fewest float options
            cfg = plain
        names = layer_names(model, cfg)
        kept = _float_layers(model, target, cfg, calib)  # already float (keep_float, the outlier guard)
        candidates = [n for n in names if n not in kept]
        floor = dataclasses.replace(cfg, keep_float=list(dict.fromkeys([*cfg.keep_float, *candidates])),
                                    float_tails=True)
        every = s.run("every conv float (the floor of the per-layer fallback)", floor) if candidates else None
        order: list[str] = []
        if every is not None and not every.within_budget:  # no need to rank the layers
            if not within:
                notes.append(f"with every convolution float the drop is still {every.drop_db:.3f} dB: the budget "
                             "needs the other int8 ops (adds, multiplies, activations, pooling, input/output) "
                             "float, or QAT")
        elif every is not None:
            drops = layer_drops(model, target, calib, pairs, dataclasses.replace(cfg, float_tails=True),
                                deadline=s.deadline)
            order = [r["layer"] for r in drops if r["layer"] in candidates]

        def fallback(k: int, c: QuantConfig = cfg) -> QuantConfig:
            return dataclasses.replace(c, keep_float=list(dict.fromkeys([*c.keep_float, *order[:k]])),
                                       float_tails=True)

        lo, hi = (1, len(order)) if order else (0, 0)  # the fewest float layers that meet the budget, by bisection
        found: tuple[Trial, QuantConfig] | None = None
        while lo < hi and not s.exhausted():
            k = (lo + hi) // 2
            t = s.run(f"{k} most sensitive layers float", fallback(k))
            if t is None:
                break
            if t.within_budget:
                hi, found = k, (t, fallback(k))
            else:
                lo = k + 1
        if order and lo and not s.exhausted():
            t = s.run(f"{lo} most sensitive layers float", fallback(lo))
            found = (t, fallback(lo)) if t is not None and t.within_budget else found
        if found is not None and not s.exhausted():
            drop_unneeded(*found)
    # 3. QAT from the most accurate PTQ configuration
    if not any(t.within_budget for t in s.trials) and qat_images and not s.exhausted(last=True):
        top = min(s.trials, key=lambda t: t.drop_db)
        qcfg = from_dict(QuantConfig, {**dataclasses.asdict(base), **top.config, "keep_nodes": []})
        unit = scale * mult  # QAT patches: HR side a multiple of scale × the model's size multiple
        qcfg = dataclasses.replace(qcfg, patch_size=-(-qcfg.patch_size // unit) * unit)
        s.run("QAT (distilled from fp32) from the best PTQ configuration", qcfg, mode="qat",
              make=lambda c: qat(model, target, list(qat_images), c, calib_images=calib), last=True)
    s.bar.close()
    if not s.trials:
        raise UsageError("quantize --auto: no trial ran (raise --max-trials or --time-limit)")
    within = [t for t in s.trials if t.within_budget]

    def build(trial: Trial) -> nn.Module:
        c = from_dict(QuantConfig, {**dataclasses.asdict(base), **trial.config, "keep_nodes": []})
        if trial.mode == "qat":
            return qat(model, target, list(qat_images or []), c, calib_images=calib)
        return ptq(model, target, calib, c)

    def unfaithful(t: Trial) -> bool:
        """The artifact computes something else than the model the search measured. The probe's flag (more
        than 1 dB further from fp32 than the fake-quant model) is forgiven within the budget where the extra
        int8 noise still fits it: near 54 dB from fp32 a 1.6 dB gap is 1.45x the fake-quant model's error, so
        its drop grows about 1.45x (EIMN-A x4, LiteRT: 0.019 -> ~0.028, Set5 in LiteRT -0.006)."""
        if not t.latency or t.latency.get("faithful") is not False:
            return False
        a, f = t.latency.get("artifact_psnr_db"), t.latency.get("fake_quant_psnr_db")
        if not t.within_budget or a is None or f is None or f - a >= PARITY_CAP_DB:
            return True
        return artifact_drop_db(t.drop_db, a, f) > budget_db

    def far(t: Trial) -> str:
        if t.latency and t.latency.get("export_error"):
            return f"the {target} export failed ({t.latency['export_error']})"
        return (f"the {target} artifact is {t.latency['artifact_psnr_db']:.1f} dB from fp32, its fake-quant model "
                f"{t.latency['fake_quant_psnr_db']:.1f} dB")

    built: dict[int, nn.Module] = {}
    ranked = sorted(within, key=lambda t: (-round(t.int8_mac_share, 4), t.float_ops, t.drop_db))
    if latency is not None and getattr(latency, "sample", False) is None:
        latency.sample = pairs[0][0]  # parity of each artifact with its fake-quant model, on a real image
    if latency is not None and ranked:
        seen: list[tuple[dict[str, Any], str]] = []
        for t in tqdm(ranked, desc=f"timing finalists {target}", unit="cfg", disable=not progress):
            good = sum(not unfaithful(u) for u in ranked if u.latency)
            if good >= finalists or len(seen) >= 3 * max(1, finalists):  # an unfaithful one is not a finalist
                break
            if any(t.config == c and t.mode == m for c, m in seen):
                continue
            seen.append((t.config, t.mode))
            built[id(t)] = build(t)
            t.latency = latency(built[id(t)])
        notes += [f"{t.name}: {far(t)}: not chosen" for t in ranked if unfaithful(t)]
        timed = [t for t in ranked if t.latency and t.latency.get("int8_ms") and not unfaithful(t)]
        if timed:
            ranked = sorted(timed, key=lambda t: t.latency["int8_ms"]) + [t for t in ranked if t not in timed]
    chosen = ranked[0] if ranked else min(s.trials, key=lambda t: t.drop_db)
    if within and unfaithful(chosen):  # no configuration within the budget has an artifact that follows it
        notes.append(f"no configuration within {budget_db:g} dB has a {target} artifact that follows its "
                     "fake-quant model")
        within = []
    if not within and latency is not None:  # the most accurate configuration whose artifact follows its model
        tried: list[Trial] = []
        for t in sorted(s.trials, key=lambda t: t.drop_db):
            if len(tried) >= max(1, finalists):
                break
            if any(t.config == u.config and t.mode == u.mode for u in tried):
                continue
            tried.append(t)
            if not t.latency:
                t.latency = latency(built.setdefault(id(t), build(t)))
            if not unfaithful(t):
                break
        chosen = next((t for t in tried if not unfaithful(t)), tried[0] if tried else chosen)
        notes += [f"{t.name}: {far(t)}: not chosen" for t in tried if t is not chosen and unfaithful(t)]
    if not within:
        which = "one" if chosen.drop_db <= min(t.drop_db for t in s.trials) else "one whose artifact follows it"
        reached = "" if any(t.within_budget for t in s.trials) else f"no configuration reached {budget_db:g} dB; "
        notes.append(f"over budget: {reached}the most accurate {which} ({chosen.name}) loses {chosen.drop_db:.3f} dB")
        if unfaithful(chosen):
            notes.append(f"{chosen.name}: {far(chosen)}: its runtime drop is larger than the search measured")
    if chosen.latency and chosen.latency.get("faithful") is False and not unfaithful(chosen):
        est = artifact_drop_db(chosen.drop_db, chosen.latency["artifact_psnr_db"], chosen.latency["fake_quant_psnr_db"])
        notes.append(f"{chosen.name}: {far(chosen)}: about {est:.3f} dB with the artifact's own error, within "
                     f"{budget_db:g}")
    q = built.get(id(chosen)) or build(chosen)
    q.info.update({"auto": {"budget_db": float(budget_db), "within_budget": bool(within),
                            "chosen": chosen.name, "validation_drop_db": chosen.drop_db,
                            "int8_mac_share": chosen.int8_mac_share, "trials": len(s.trials),
                            "latency": chosen.latency}})
    result = AutoResult(q, chosen, s.trials, float(budget_db), bool(within), float(np.mean(s.fp32)), len(pairs),
                        len(calib), notes)
    if cache is not None:
        atomic_write_text(cache / "trials.jsonl", "".join(json.dumps(t.to_json()) + "\n" for t in s.trials))
        atomic_write_text(cache / "result.json", json.dumps(result.summary(), indent=2) + "\n")
    return result
