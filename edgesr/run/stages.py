"""The stages of ``edgesr run``, each a plain function: inputs in, files written into ``out`` (the stage's own
folder, published atomically by :mod:`edgesr.run.cache`), a small JSON-able dict of outputs returned.

File outputs are returned as names relative to ``out``; the pipeline resolves them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EdgesrError
from ..io_utils import atomic_write_text


def _json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


def quote(parts: Sequence[Any]) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def data_args(folders: Sequence[Path]) -> list[str]:
    return ["--data", *map(str, folders)] if folders else []


# ------------------------------------------------------------------------------ model stages
def model_spec(model: Any, scale: int, weights: str | None = None) -> Any:
    """The edgesr.models.ModelSpec of a recipe's model entry."""
    from ..models import ModelSpec

    if isinstance(model, dict):
        return ModelSpec(model["model"], scale, weights=weights, kwargs=dict(model.get("kwargs") or {}),
                         input_range=float(model.get("input_range") or 1.0))
    return ModelSpec(str(model), scale, weights=weights)


def label(model: Any) -> str:
    """File-name-safe short name of a recipe's model (``MySR`` for ``nets/my_sr.py:MySR``)."""
    return model_spec(model, 1).label


def _load(model: Any, scale: int, weights: str | None = None) -> Any:
    """Whatever ``weights`` holds (plain, reparameterized or int8) for the recipe's model."""
    from ..quantize.checkpoint import load_model

    return load_model(model_spec(model, scale, weights))


def init_model(name: str, scale: int, seed: int, out: Path) -> dict[str, Any]:
    """A seeded random init saved as a checkpoint, so every later stage starts from the same weights."""
    import torch

    from ..models import save_checkpoint

    torch.manual_seed(seed)
    model = _load(name, scale)
    save_checkpoint(out / "init.pt", model, extra={"source": f"random init, seed {seed}"})
    return {"weights": "init.pt"}


def train_model(recipe: Any, work: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Train (a teacher, or a student against its teacher) with edgesr.train.

    Training runs in a persistent ``work`` folder so an interrupted stage resumes from its last checkpoint
    (``edgesr.train`` saves one on Ctrl-C/SIGTERM and every ``checkpoint_every`` steps).
    """
    import shutil

    from ..train import train
    from ..train.loop import MODEL_FILE, STATE_FILE

    final = train(recipe, work, resume=(work / STATE_FILE).exists(), progress=progress)
    shutil.copy2(final, out / MODEL_FILE)
    log = work / "train_log.jsonl"
    if log.exists():
        shutil.copy2(log, out / "train_log.jsonl")
    return {"weights": MODEL_FILE, "iterations": recipe.iterations}


def reparam(name: str, scale: int, weights: str, shift: str | None, out: Path) -> dict[str, Any]:
    """The deploy graph (collapsed branches, folded norms, shifts as convs), saved with its structure record."""
    import copy

    import torch

    from ..models import min_size, save_checkpoint, size_multiple
    from ..reparam import deploy, record_of

    model = _load(name, scale, weights)
    before = copy.deepcopy(model)
    model = deploy(model, shift=shift)
    mult = max(8, size_multiple(model))
    size = mult * max(2, -(-min_size(model) // mult))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((model(x) - before(x)).abs().max())
    save_checkpoint(out / "deployed.pt", model, extra={"reparam": record_of(model), "source": weights})
    return {"weights": "deployed.pt", "max_abs_diff": diff}


# ------------------------------------------------------------------------------------ data
def calibration_data(folders: Sequence[Path], scale: int, limit: int, patch: int) -> list[Any]:
    """PTQ calibration: the user's HR folders (edgesr.quantize picks ``calib_size`` images and crops their LR),
    or LR crops of the sample photos kept apart from evaluation (``edgesr.data.samples.CALIB_IMAGES``). The
    samples are large, so their HR is centre-cropped before the bicubic (cheap) instead of after."""
    if folders:
        return [Path(f) for f in folders]
    from ..data.folders import hr_and_bicubic_lr
    from ..data.io import load_image, to_tensor
    from ..data.samples import CALIB_IMAGES, sample_paths

    out = []
    side = patch * scale
    for p in sample_paths(CALIB_IMAGES)[:limit]:
        hr = load_image(p)
        h, w = min(side, hr.shape[0]), min(side, hr.shape[1])
        y, x = (hr.shape[0] - h) // 2, (hr.shape[1] - w) // 2
        _, lr = hr_and_bicubic_lr(hr[y:y + h, x:x + w], scale)
        out.append(to_tensor(lr))
    return out


def training_folders(folders: Sequence[Path], out: Path) -> list[Path]:
    """HR folders for QAT: the user's, or a folder of links to the calibration sample photos."""
    if folders:
        return [Path(f) for f in folders]
    from ..data.samples import CALIB_IMAGES, sample_paths

    d = out / "calib-images"
    d.mkdir(exist_ok=True)
    for p in sample_paths(CALIB_IMAGES):
        (d / p.name).symlink_to(p)
    return [d]


def open_eval(folders: Sequence[Path], scale: int) -> list[Any]:
    from ..data.folders import open_benchmark
    from ..data.samples import sample_benchmark

    benches = [open_benchmark(f, scale) for f in folders] if folders else [sample_benchmark(scale)]
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise EdgesrError(f"two evaluation folders share a name ({', '.join(names)}); results are keyed by name")
    return benches


# -------------------------------------------------------------------------------- quantize
def split_for_search(calib_folders: Sequence[Path], val_folders: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(calibration, validation) images for the int8 search and the sensitivity analysis: ``data.val`` when
    given, else every 5th image of ``data.calib`` (every 3rd of the calibration sample photos): never the
    evaluation images, never the same image twice."""
    from ..quantize.auto import split_images

    if val_folders:
        if calib_folders:
            return [Path(f) for f in calib_folders], [Path(f) for f in val_folders]
        from ..data.samples import CALIB_IMAGES, sample_paths

        return sample_paths(CALIB_IMAGES), [Path(f) for f in val_folders]
    if calib_folders:
        return split_images(calib_folders)
    from ..data.samples import CALIB_IMAGES, sample_paths

    return split_images(sample_paths(CALIB_IMAGES), every=3)


def quantize(name: str, scale: int, weights: str, target: str, method: str, cfg: Any, calib_folders: Sequence[Path],
             train_folders: Sequence[Path], teacher: tuple[str, str] | None, sensitivity: bool,
             out: Path, sensitivity_layers: int | None = None, auto: dict[str, Any] | None = None,
             val_folders: Sequence[Path] = ()) -> dict[str, Any]:
    """PTQ, QAT or the budgeted search (``method="auto"``, ``auto``: budget_db / max_trials / time_limit) for one
    target, saved so ``edgesr.quantize.load`` reloads it; optionally the per-layer sensitivity (PSNR-Y drop vs
    HR when only that layer is int8, on validation images)."""
    from .. import quantize as q

    model = _load(name, scale, weights)
    calib = calibration_data(calib_folders, scale, int(cfg.calib_size), int(cfg.calib_patch))
    outputs: dict[str, Any] = {"weights": "quantized.pt", "method": method}
    if method == "auto":
        from ..quantize.auto import auto_quantize, recipe_yaml

        cal, val = split_for_search(calib_folders, val_folders)
        a = dict(auto or {})
        latency = None
        if int(a.get("finalists", 0)):
            from ..export.latency import LatencyProbe

            latency = LatencyProbe(model, target, tuple(a.get("latency_size", (64, 64))), threads=a.get("threads"),
                                   workdir=out / "finalists")
        res = auto_quantize(model, target, [str(p) for p in cal], [str(p) for p in val], float(a.get("budget_db", 0.05)),
                            config=cfg, max_trials=int(a.get("max_trials", 24)), time_limit=a.get("time_limit"),
                            cache_dir=out / "search",
                            qat_images=[str(p) for p in train_folders] if train_folders else None,
                            latency=latency, finalists=int(a.get("finalists", 0)),
                            val_count=int(a.get("val_count", 32)))
        qmodel = res.model
        _json(out / "auto.json", {**res.summary(), "recipe": recipe_yaml(target, res)})
        outputs["auto"] = "auto.json"
    elif method == "qat":
        t = _load(teacher[0], scale, teacher[1]) if teacher else None
        qmodel = q.qat(model, target, training_folders(train_folders or calib_folders, out), cfg, teacher=t)
    else:
        qmodel = q.ptq(model, target, calib, cfg)
    q.save_quantized(qmodel, out / "quantized.pt")  # records the structure (deployed/expanded) itself
    if sensitivity:
        from ..models import size_multiple
        from ..quantize.auto import layer_drops, validation_pairs
        from ..quantize.ptq import calibration_inputs
        from ..quantize.sensitivity import layer_names

        fp32 = _load(name, scale, weights)
        cal, val = split_for_search(calib_folders, val_folders)
        layers = spread(layer_names(fp32, cfg), sensitivity_layers) if sensitivity_layers is not None else None
        inputs = calibration_inputs([str(p) for p in cal], scale, cfg, size_multiple(fp32))
        pairs = validation_pairs([str(p) for p in val], scale, 4, 64, size_multiple(fp32))
        rows = layer_drops(fp32, target, inputs, pairs, cfg, layers=layers)
        _json(out / "sensitivity.json", [{"layer": str(r["layer"]), "drop_db": float(r["drop_db"])} for r in rows])
        outputs["sensitivity"] = "sensitivity.json"
    return outputs


def spread(items: Sequence[str], n: int) -> list[str]:
    """``n`` items evenly spread over ``items``, first and last included (deterministic)."""
    if n >= len(items):
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / max(1, n - 1)) for i in range(n)})
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------- export
def export_command(name: str, scale: int, weights: str, target: str, precision: str, size: tuple[int, int],
                   artifact: Path, quantized: str | None, calib_folders: Sequence[Path] = ()) -> str:
    from ..cliargs import spec_flags

    parts = ["edgesr", "export", *spec_flags(model_spec(name, scale, weights))]
    if quantized:
        parts += ["--quantized", quantized]
    parts += ["--target", target, "--precision", precision, "--input-size", f"{size[0]}x{size[1]}", "--out", artifact]
    if calib_folders:
        parts += ["--data", *map(str, calib_folders)]
    return quote(parts)


def export(name: str, scale: int, weights: str, target: str, precision: str, size: tuple[int, int],
           quantized: str | None, out: Path, final_dir: Path, calib_folders: Sequence[Path] = (),
           reuse_dir: Path | None = None) -> dict[str, Any]:
    """One artifact (+ sidecar) for ``target`` at ``precision``; int8 comes from the quantize stage's model;
    int16x8 (LiteRT) is calibrated here on ``calib_folders`` (default: the sample photos). An artifact the int8
    search already lowered from the same graph (``reuse_dir``: its timed finalists) is copied, not lowered again."""
    from ..export import export as export_artifact
    from ..targets import CALIBRATED, suffix

    fname = f"{label(name)}_x{scale}_{precision}{suffix(target)}"
    model = _load(name, scale, weights)
    qmodel = _load(name, scale, quantized) if quantized else None
    calibration = None
    if precision in CALIBRATED:
        from ..export.exporters import calibration_lr

        calibration = calibration_lr(model, [str(f) for f in calib_folders] or None, size)
    command = export_command(name, scale, weights, target, precision, size, final_dir / fname, quantized,
                             calib_folders if precision in CALIBRATED else ())
    reuse = sorted(reuse_dir.glob(f"*{suffix(target)}")) if reuse_dir is not None and reuse_dir.is_dir() else []
    info = export_artifact(model, target, precision, size, out / fname, quantized=qmodel, command=command,
                           calibration=calibration, reuse=reuse)
    return {"artifact": fname, "target": target, "precision": precision, "command": command,
            "delegation": info.delegation}


# ----------------------------------------------------------------------------------- crops
@dataclass
class CropWindow:
    """An LR window of one evaluation image, identical for every variant that is compared."""

    dataset: str
    image: str
    y: int
    x: int
    h: int
    w: int
    lr: np.ndarray          # 1×3×h×w float32 in [0, 1]


def crop_windows(benches: Sequence[Any], count: int, size: tuple[int, int]) -> list[CropWindow]:
    """The most textured ``size`` window of the first ``count`` images of the first dataset."""
    from ..data.io import to_tensor
    from ..report.crops import pick_window

    if not benches or count <= 0:
        return []
    bench = benches[0]
    out = []
    for pair in bench.pairs[:count]:
        lr = pair.load_lr()
        y, x, h, w = pick_window(lr, size)
        out.append(CropWindow(bench.name, pair.name, y, x, h, w, to_tensor(lr[y:y + h, x:x + w]).numpy()))
    return out


def _save_crops(run: Any, windows: Sequence[CropWindow], scale: int, size: tuple[int, int], out: Path) -> list[str]:
    import torch

    from ..data.io import save_image, to_uint8
    from ..export.check import run_tiled

    names = []
    for i, win in enumerate(windows):
        sr, _, _ = run_tiled(run, win.lr, scale, size, 0)
        name = f"crop-{i}.png"
        save_image(out / name, to_uint8(torch.from_numpy(sr)))
        names.append(name)
    return names


# ----------------------------------------------------------------------------------- check
def check_pytorch(name: str, scale: int, weights: str, eval_folders: Sequence[Path], threads: int | None, runs: int,
                  size: tuple[int, int], crops: int, out: Path, progress: bool) -> dict[str, Any]:
    """PSNR/SSIM-Y of a PyTorch model on whole images (fp32, or a fake-quant int8 model: simulated), latency
    of one artifact-sized window, and the crops."""
    import torch

    from ..evaluate import evaluate
    from ..export.runtimes import measure_latency
    from ..quantize.checkpoint import fp32_of
    from ..quantize.graph import QuantizedSR
    if threads:
        torch.set_num_threads(threads)
    model = _load(name, scale, weights)
    benches = open_eval(eval_folders, scale)
    quality = {}
    reference = None
    if isinstance(model, QuantizedSR):  # the drop's reference: fp32 on the input the int8 graph sees
        reference = model.same_input(fp32_of(model))
    for b in benches:
        r = evaluate(model, b, scale, progress=progress)
        quality[b.name] = {"psnr_y": r.psnr_y, "ssim_y": r.ssim_y, "images": r.images, "per_image": r.per_image}
        if reference is not None:
            ref = evaluate(reference, b, scale, progress=progress)
            quality[b.name]["reference_psnr_y"] = ref.psnr_y
            quality[b.name]["reference_per_image"] = ref.per_image

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    latency = {**measure_latency(run, x, runs=runs), "threads": threads, "input_size": list(size),
               "measured_by": "wall clock around one PyTorch eager call, host"}
    crop_files = _save_crops(run, crop_windows(benches, crops, size), scale, size, out)
    command = quote(["edgesr", "eval", "--model", name, "--scale", scale, "--weights", weights,
                     *data_args(eval_folders)] + (["--threads", threads] if threads else []))
    _json(out / "check.json", {"quality": quality, "latency_ms": latency, "command": command})
    return {"check": "check.json", "crops": crop_files, "command": command}


def check_artifact(artifact: Path, eval_folders: Sequence[Path], threads: int | None, runs: int,
                   compare_images: int | None, memory: bool, op_profile: bool, size: tuple[int, int], crops: int,
                   out: Path, progress: bool) -> dict[str, Any]:
    """``edgesr check`` on one artifact (its own runtime), plus the crops run through the same runtime."""
    from ..export import check as chk
    from ..export import runtimes
    from ..export.spec import read_sidecar

    report = chk.check_artifact(artifact, list(eval_folders) or None, threads=threads, runs=runs,
                                compare_images=compare_images, memory=memory, op_profile=op_profile,
                                progress=False)
    crop_files: list[str] = []
    if report["status"] == "ran" and crops:
        info = read_sidecar(artifact)
        run = runtimes.load_runner(artifact, info, threads)
        crop_files = _save_crops(run, crop_windows(open_eval(eval_folders, info.scale), crops, size), info.scale,
                                 size, out)
    command = quote(["edgesr", "check", artifact, *data_args(eval_folders)]
                    + (["--threads", threads] if threads else []) + ["--runs", runs])
    _json(out / "check.json", {**report, "command": command})
    return {"check": "check.json", "crops": crop_files, "command": command}


__all__ = ["init_model", "train_model", "reparam", "quantize", "export", "check_pytorch", "check_artifact",
           "calibration_data", "training_folders", "open_eval", "crop_windows", "CropWindow", "export_command"]
