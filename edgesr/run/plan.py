"""The plan of ``edgesr run``: a recipe becomes a list of cached stages, each keyed up front.

Keys depend only on configs, upstream keys and input fingerprints, so the display can say ``[3/12]`` and a
re-run knows at once what is already done. Stage folders are deterministic (``OUT/stages/<unit>-<key12>``), so a
stage can name the files of the stages it consumes before they exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import to_dict
from . import stages
from .cache import (RunError, file_sha256, files_fingerprint, folder_fingerprint, stage_dir, stage_key,
                    work_dir)
from .recipe import RunRecipe, distill_train_recipe, quant_config, teacher_train_recipe

LOGS_DIR = "logs"
REPORT_DIR = "report"


class RunInterrupted(RunError):
    exit_code = 130


@dataclass
class Unit:
    """One cached stage of the plan."""

    name: str                                   # e.g. "export executorch-int8" (folder: export-executorch-int8-<key>)
    title: str                                  # what the progress line says
    key: str
    fn: Callable[[Path], dict[str, Any]]        # writes into the (temporary) stage folder, returns outputs
    kind: str = ""                              # teacher | distill | init | reparam | quantize | export | check


@dataclass
class Weights:
    """A weights reference: as the user gave it ("zoo", a file) or a file a stage writes."""

    text: str                                   # what create(weights=...) takes
    upstream: dict[str, str]                    # unit -> key, when a stage produces it
    files: dict[str, str]                       # role -> sha256, when the user gives it


# ------------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    recipe: RunRecipe
    out: Path
    units: list[Unit]
    fp32: Weights
    quantized: dict[str, Weights]
    artifacts: dict[tuple[str, str], Path]      # (target, precision) -> artifact path
    checks: dict[str, dict[str, Any]]           # check unit -> {"kind": pytorch|simulated|artifact, ...}
    size: tuple[int, int]
    teacher: Weights | None


def _given(weights: str, name: Any, scale: int, role: str) -> Weights:
    from ..models import resolve_weights

    return Weights(weights, {}, {role: file_sha256(resolve_weights(stages.model_spec(name, scale, weights)))})


def _data_fp(folders: list[Path], default: tuple[str, ...]) -> str:
    if folders:
        return ",".join(folder_fingerprint(f) for f in folders)
    from ..data.samples import sample_paths

    return files_fingerprint(sample_paths(default))


def build_plan(r: RunRecipe, out: Path, progress: bool = True) -> Plan:
    from ..data.samples import CALIB_IMAGES, EVAL_IMAGES

    units: list[Unit] = []
    keys: dict[str, str] = {}
    name, scale = r.model.ref(), r.model.scale
    label = r.model.label

    def add(unit: str, kind: str, title: str, config: Any, fn: Callable[[Path], dict[str, Any]],
            w: list[Weights] = (), files: dict[str, str] | None = None) -> str:
        upstream: dict[str, str] = {}
        fps: dict[str, str] = dict(files or {})
        for x in w:
            upstream.update(x.upstream)
            fps.update(x.files)
        key = stage_key(unit, config, upstream, fps)
        keys[unit] = key
        units.append(Unit(unit, title, key, fn, kind))
        return key

    def produced(unit: str, fname: str) -> Weights:
        return Weights(str(stage_dir(out, unit, keys[unit]) / fname), {unit: keys[unit]}, {})

    eval_fp = _data_fp(r.data.eval, EVAL_IMAGES)
    calib_fp = _data_fp(r.data.calib, CALIB_IMAGES)
    train_fp = ",".join(folder_fingerprint(f) for f in r.data.train)

    # teacher ------------------------------------------------------------------------------
    teacher: Weights | None = None
    if r.teacher is not None:
        t = r.teacher
        if t.train is not None:
            tr = teacher_train_recipe(r)
            init = [_given(t.weights, t.name, t.scale or scale, "teacher_init")] if t.weights else []
            add("teacher", "teacher", f"teacher {t.name} x{t.scale}: train {tr.iterations} iterations",
                to_dict(tr), lambda d, tr=tr: stages.train_model(tr, work_dir(out, "teacher", keys["teacher"]), d,
                                                                 progress),
                init, {"train_data": ",".join(folder_fingerprint(f) for f in tr.data.train)})
            teacher = produced("teacher", "model.pt")
        else:
            teacher = _given(t.weights, t.name, t.scale or scale, "teacher")

    # the model: distilled, given, or a seeded init ---------------------------------------------
    if r.distill is not None:
        assert teacher is not None
        dtr = distill_train_recipe(r, teacher.text)
        config = to_dict(dtr)
        config["teacher"]["weights"] = None   # identified by upstream key / file hash, not by its path
        init = [_given(r.model.weights, name, scale, "student_init")] if r.model.weights else []
        add("distill", "distill", f"distill {label} x{scale} from {r.teacher.name}: {dtr.iterations} iterations",
            config, lambda d: stages.train_model(distill_train_recipe(r, teacher.text),
                                                 work_dir(out, "distill", keys["distill"]), d, progress),
            [teacher, *init], {"train_data": ",".join(folder_fingerprint(f) for f in dtr.data.train)})
        base = produced("distill", "model.pt")
    elif r.model.weights is not None:
        base = _given(r.model.weights, name, scale, "model")
    else:
        add("init", "init", f"model {label} x{scale}: random init (seed {r.seed})", {"name": name, "scale": scale,
            "seed": r.seed}, lambda d: stages.init_model(name, scale, r.seed, d))
        base = produced("init", "init.pt")

    # reparameterize ---------------------------------------------------------------------------
    fp32 = base
    if r.reparam is not None:
        shift = r.reparam.shift
        add("reparam", "reparam", f"reparameterize {label} x{scale} (deploy graph)", {"name": name, "scale": scale,
            "shift": shift}, lambda d: stages.reparam(name, scale, base.text, shift, d), [base])
        fp32 = produced("reparam", "deployed.pt")

    # quantize ---------------------------------------------------------------------------------
    quantized: dict[str, Weights] = {}
    if r.quantize is not None:
        q = r.quantize
        for target in q.targets:
            cfg, method = quant_config(r, target), q.method_for(target)
            unit = f"quantize {target}"
            what = {"qat": "QAT", "auto": f"searched within {q.budget_db:g} dB"}.get(method, "PTQ")
            search = {"budget_db": q.budget_db, "max_trials": q.max_trials, "time_limit": q.time_limit,
                      "finalists": q.finalists, "val_count": q.val_count,
                      "latency_size": list(r.export.input_size) if r.export is not None else [64, 64],
                      "threads": r.check.threads if r.check is not None else None}
            extra = [teacher] if (method == "qat" and teacher is not None) else []
            add(unit, "quantize", f"quantize {label} x{scale} for {target}: {what} int8"
                + (" + per-layer sensitivity" if target in q.sensitivity else ""),
                {"name": name, "scale": scale, "target": target, "method": method, "config": to_dict(cfg),
                 **({"search": search} if method == "auto" else {}),
                 "sensitivity": target in q.sensitivity, "sensitivity_layers": q.sensitivity_layers},
                lambda d, target=target, cfg=cfg, method=method: stages.quantize(
                    name, scale, fp32.text, target, method, cfg, r.data.calib, r.data.train,
                    (r.teacher.name, teacher.text) if (method == "qat" and teacher is not None) else None,
                    target in q.sensitivity, d, q.sensitivity_layers, auto=search, val_folders=r.data.val),
                [fp32, *extra], {"calib_data": calib_fp, "val_data": ",".join(folder_fingerprint(f) for f in r.data.val),
                                 **({"train_data": train_fp} if method in ("qat", "auto") else {})})
            quantized[target] = produced(unit, "quantized.pt")

    # export -----------------------------------------------------------------------------------
    size = tuple(r.export.input_size) if r.export is not None else (64, 64)
    artifacts: dict[tuple[str, str], Path] = {}
    if r.export is not None:
        from ..export.spec import BUILTIN_TARGETS
        from ..targets import CALIBRATED

        for target, precisions in r.export.targets.items():
            for precision in precisions:
                unit = f"export {target}-{precision}"
                qw = quantized.get(target) if precision == "int8" else None
                add(unit, "export", f"export {target} {precision} ({size[0]}x{size[1]} input)",
                    {"name": name, "scale": scale, "target": target, "precision": precision, "size": list(size)},
                    lambda d, target=target, precision=precision, qw=qw, unit=unit: stages.export(
                        name, scale, fp32.text, target, precision, size, qw.text if qw else None, d,
                        stage_dir(out, unit, keys[unit]), r.data.calib,
                        Path(quantized[target].text).parent / "finalists" if target in quantized else None),
                    [fp32] + ([qw] if qw else []),
                    {"calib_data": calib_fp} if precision in CALIBRATED else None)
                fname = f"{label}_x{scale}_{precision}{BUILTIN_TARGETS[target]['suffix']}"
                artifacts[(target, precision)] = stage_dir(out, unit, keys[unit]) / fname

    # check ------------------------------------------------------------------------------------
    checks: dict[str, dict[str, Any]] = {}
    if r.check is not None:
        c = r.check
        common = {"threads": c.threads, "runs": c.runs, "crops": c.crops, "size": list(size)}
        if c.pytorch:
            unit = "check pytorch-fp32"
            add(unit, "check", "check PyTorch fp32 (whole images)", {"name": name, "scale": scale, **common},
                lambda d: stages.check_pytorch(name, scale, fp32.text, r.data.eval, c.threads, c.runs, size, c.crops,
                                               d, progress), [fp32], {"eval_data": eval_fp})
            checks[unit] = {"kind": "pytorch", "target": "pytorch", "precision": "fp32"}
        if c.simulated:
            for target, qw in quantized.items():
                unit = f"check pytorch-int8-{target}"
                add(unit, "check", f"check PyTorch fake-quant int8 for {target} (simulated)",
                    {"name": name, "scale": scale, **common},
                    lambda d, qw=qw: stages.check_pytorch(name, scale, qw.text, r.data.eval, c.threads, c.runs, size,
                                                          c.crops, d, progress), [qw], {"eval_data": eval_fp})
                checks[unit] = {"kind": "simulated", "target": target, "precision": "int8"}
        for (target, precision), path in artifacts.items():
            unit = f"check {target}-{precision}"
            exp_unit = f"export {target}-{precision}"
            add(unit, "check", f"check {target} {precision} in its runtime",
                {**common, "compare_images": c.compare_images, "memory": c.memory, "op_profile": c.op_profile},
                lambda d, path=path: stages.check_artifact(path, r.data.eval, c.threads, c.runs, c.compare_images,
                                                           c.memory, c.op_profile, size, c.crops, d, progress),
                [Weights("", {exp_unit: keys[exp_unit]}, {})], {"eval_data": eval_fp})
            checks[unit] = {"kind": "artifact", "target": target, "precision": precision, "artifact": str(path)}
    return Plan(r, out, units, fp32, quantized, artifacts, checks, size, teacher)


# ----------------------------------------------------------------------------- preflight
def prepare_out(out: Path) -> Path:
    """Create the run folder, or say in one line why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"output folder is not writable: {out}")
    return out


def preflight(r: RunRecipe) -> None:
    """Check every input a stage will read before the first stage runs: folders, images, optional stages."""
    from ..data.folders import list_images
    from ..data.io import IMAGE_EXTENSIONS, load_image
    from ..data.samples import CALIB_IMAGES, EVAL_IMAGES, sample_paths

    for role, folders in (("data.eval", r.data.eval), ("data.calib", r.data.calib), ("data.train", r.data.train)):
        for f in folders:
            f = Path(f)
            if not f.exists():
                raise RunError(f"{role}: data folder not found: {f}")
            if not f.is_dir():
                raise RunError(f"{role}: data path is not a folder: {f}")
            images = sorted(p for p in f.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise RunError(f"{role}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {f}")
            if role != "data.train":  # small sets, read whole: a corrupt file fails here, not in a later stage
                for p in images:
                    load_image(p)
            elif not any(list_images(d) for d in [f, *[p for p in f.rglob("*") if p.is_dir()]]):
                raise RunError(f"{role}: no images in {f}")
    names = [Path(f).resolve().name for f in r.data.eval]
    if len(set(names)) != len(names):
        raise RunError(f"data.eval: two folders share a name ({', '.join(names)}); results are keyed by folder name")
    if not r.data.eval:
        sample_paths(EVAL_IMAGES)
    if r.quantize is not None and not r.data.calib:
        sample_paths(CALIB_IMAGES)
    if r.quantize is not None:
        try:
            from ..quantize import ptq, qat, save_quantized, sensitivity  # noqa: F401
        except ImportError as exc:
            raise RunError(f"the quantize stage needs edgesr.quantize, which this install lacks ({exc}); remove "
                           "the quantize section and int8 exports to run the rest") from None
    if r.export is not None:
        from ..export.exporters import check_input_size
        from ..models import build, kind_of, probe_sizes

        model = build(stages.model_spec(r.model.ref(), r.model.scale))
        if kind_of(r.model.name) != "registry":
            probe_sizes(model, r.model.scale)
        check_input_size(model, tuple(r.export.input_size), r.model.label)


__all__ = ["Unit", "Weights", "Plan", "RunInterrupted", "build_plan", "prepare_out", "preflight"]
