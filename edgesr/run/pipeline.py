"""``edgesr run``: a recipe becomes a list of cached stages, run in order, then a report.

Planning computes every stage's cache key up front (keys depend only on configs, upstream keys and input
fingerprints), so the display can say ``[3/12]`` and a re-run knows at once what is already done. Stage
folders are deterministic (``OUT/stages/<unit>-<key12>``), so a stage can name the files of the stages it
consumes before they exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from .. import __version__
from ..config import to_dict
from ..errors import EdgesrError, one_line
from . import stages
from .cache import (RunError, StageResult, clean_stale, file_sha256, files_fingerprint, folder_fingerprint,
                    run_cached, run_lock, stage_dir, stage_key, work_dir)
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
            what = "QAT" if method == "qat" else "PTQ"
            extra = [teacher] if (method == "qat" and teacher is not None) else []
            add(unit, "quantize", f"quantize {label} x{scale} for {target}: {what} int8"
                + (" + per-layer sensitivity" if target in q.sensitivity else ""),
                {"name": name, "scale": scale, "target": target, "method": method, "config": to_dict(cfg),
                 "sensitivity": target in q.sensitivity, "sensitivity_layers": q.sensitivity_layers},
                lambda d, target=target, cfg=cfg, method=method: stages.quantize(
                    name, scale, fp32.text, target, method, cfg, r.data.calib, r.data.train,
                    (r.teacher.name, teacher.text) if (method == "qat" and teacher is not None) else None,
                    target in q.sensitivity, d, q.sensitivity_layers),
                [fp32, *extra], {"calib_data": calib_fp, **({"train_data": train_fp} if method == "qat" else {})})
            quantized[target] = produced(unit, "quantized.pt")

    # export -----------------------------------------------------------------------------------
    size = tuple(r.export.input_size) if r.export is not None else (64, 64)
    artifacts: dict[tuple[str, str], Path] = {}
    if r.export is not None:
        from ..export.spec import BUILTIN_TARGETS

        for target, precisions in r.export.targets.items():
            for precision in precisions:
                unit = f"export {target}-{precision}"
                qw = quantized.get(target) if precision == "int8" else None
                add(unit, "export", f"export {target} {precision} ({size[0]}x{size[1]} input)",
                    {"name": name, "scale": scale, "target": target, "precision": precision, "size": list(size)},
                    lambda d, target=target, precision=precision, qw=qw, unit=unit: stages.export(
                        name, scale, fp32.text, target, precision, size, qw.text if qw else None, d,
                        stage_dir(out, unit, keys[unit])),
                    [fp32] + ([qw] if qw else []))
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


# --------------------------------------------------------------------------------- display
class Display:
    """One line per stage: '[3/12] export executorch int8 ... 41 s' (a live counter on a terminal), then
    'done in 41.2 s' or 'cached'. Library output goes to OUT/logs/<stage>.log unless verbose."""

    def __init__(self, stream: TextIO, total: int, enabled: bool = True):
        self.stream, self.total, self.enabled = stream, total, enabled
        self.tty = enabled and getattr(stream, "isatty", lambda: False)()

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, i: int, unit: Unit) -> Iterator[None]:
        head = f"[{i}/{self.total}] {unit.title}"
        stop = threading.Event()
        start = time.perf_counter()
        ticker = None
        if self.tty:
            def tick() -> None:
                while not stop.wait(1.0):
                    self.stream.write(f"\r{head} ... {time.perf_counter() - start:.0f} s")
                    self.stream.flush()
            self.stream.write(f"{head} ...")
            self.stream.flush()
            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        elif self.enabled:
            self.line(f"{head} ...")
        failed: str | None = None
        try:
            yield
        except KeyboardInterrupt:
            failed = "interrupted"
            raise
        except BaseException:
            failed = "failed"
            raise
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
                self.stream.write("\r" + " " * (len(head) + 12) + "\r")
                self.stream.flush()
            if failed and self.enabled:
                self.line(f"{head}: {failed} after {time.perf_counter() - start:.1f} s")

    def done(self, i: int, unit: Unit, result: StageResult) -> None:
        head = f"[{i}/{self.total}] {unit.title}"
        if result.cached:
            self.line(f"{head}: cached")
        elif self.tty:
            self.line(f"{head}: done in {result.seconds:.1f} s")
        else:
            self.line(f"{' ' * len(f'[{i}/{self.total}]')} done in {result.seconds:.1f} s")


def console() -> tuple[TextIO, bool]:
    """A stream to the terminal that survives :func:`captured`, and whether fd capture is possible."""
    try:
        fd = sys.stdout.fileno()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout, False
    sys.stdout.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1), True


@contextlib.contextmanager
def captured(log: Path | None) -> Iterator[None]:
    """Send fd 1 and 2 (Python, C++ and tqdm output of the libraries) to ``log`` while a stage runs."""
    if log is None:
        yield
        return
    fds = (sys.stdout.fileno(), sys.stderr.fileno())
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        for fd in fds:
            os.dup2(f.fileno(), fd)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd, s in zip(fds, saved):
            os.dup2(s, fd)
            os.close(s)


_STOP = threading.Event()  # set by Ctrl-C / SIGTERM; checked when a stage returns


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a job scheduler) ends the run like Ctrl-C: the stage in flight is dropped cleanly.

    The handler also sets ``_STOP``: Python drops an exception raised while a weakref or ``__del__``
    callback runs ("Exception ignored in ..."), so a signal landing there would let the stage finish and
    the run go on; ``_run_unit`` checks the flag before a stage is published."""
    def handler(signum: int, frame: Any) -> None:
        _STOP.set()
        raise KeyboardInterrupt

    _STOP.clear()
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
        _STOP.clear()


# ------------------------------------------------------------------------------------- run
def run(r: RunRecipe, out: str | Path, *, command: str = "", progress: bool = True,
        verbose: bool = False) -> Path | None:
    """Run every stage of ``r`` into ``out`` (cached, resumable) and build the report; returns report.html
    (None with ``report: null``)."""
    import warnings

    preflight(r)               # inputs first: a bad input leaves no trace, not even an empty --out
    out = prepare_out(Path(out))
    with run_lock(out), _sigterm_as_interrupt(), warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        clean_stale(out)
        plan = build_plan(r, out, progress)
        stream, can_capture = console()
        verbose = verbose or not can_capture
        total = len(plan.units) + (r.report is not None)
        display = Display(stream, total, enabled=progress)
        display.line(f"edgesr run: {r.model.label} x{r.model.scale} -> {out} ({total} stages; "
                     f"library output in {out / LOGS_DIR})")
        done: dict[str, StageResult] = {}
        for i, unit in enumerate(plan.units, 1):
            done[unit.name] = _run_unit(plan, unit, i, display, verbose)

        if r.report is None:  # `report: null`: numbers on the console only
            from ..report.build import add_drops, normalize_row

            rows = [normalize_row(x) for x in collect(plan, done, command)["rows"]]
            add_drops(rows)
            display.line(summary({"rows": rows}))
            html = None
        else:
            def report(d: Path) -> dict[str, Any]:
                from ..report import build_report

                return {"html": str(build_report(collect(plan, done, command), out / REPORT_DIR))}

            report_unit = Unit("report", f"report -> {out / REPORT_DIR}", "", report, "report")
            html = Path(_run_unit(plan, report_unit, len(plan.units) + 1, display, verbose,
                                  cache=False).outputs["html"])
            display.line(summary(json.loads((out / REPORT_DIR / "report.json").read_text())))
            stream.write(f"report: {html}\n")
        stream.flush()
        if stream is not sys.stdout:
            stream.close()
    return html


def _run_unit(plan: Plan, unit: Unit, i: int, display: Display, verbose: bool, cache: bool = True) -> StageResult:
    """Run one stage (or take it from the cache) with its output logged; every failure becomes one line."""
    from .cache import load_finished

    debug = os.environ.get("EDGESR_DEBUG") == "1"
    log = None if verbose else plan.out / LOGS_DIR / f"{unit.name.replace(' ', '-')}.log"
    cached = load_finished(plan.out, unit.name, unit.key) if cache else None
    if cached is not None:
        display.done(i, unit, cached)
        return cached

    def fn(d: Path) -> dict[str, Any]:
        outputs = unit.fn(d)
        if _STOP.is_set():  # the signal's KeyboardInterrupt was swallowed inside a library callback
            raise KeyboardInterrupt
        return outputs

    try:
        with display.stage(i, unit), captured(log):
            if _STOP.is_set():
                raise KeyboardInterrupt
            if cache:
                result = run_cached(plan.out, unit.name, unit.key, fn, info={"title": unit.title})
            else:
                start = time.perf_counter()
                outputs = fn(plan.out)
                result = StageResult(unit.name, "", plan.out, outputs, seconds=time.perf_counter() - start)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted during '{unit.title}'; finished stages are kept in {plan.out / 'stages'}: "
                             "run the same command again to resume") from None
    except EdgesrError as exc:
        if debug:
            raise
        if exc.exit_code == 130:  # training saved its state on Ctrl-C/SIGTERM
            raise RunInterrupted(f"interrupted during '{unit.title}' ({one_line(exc)}); run the same command "
                                 "again to resume") from None
        raise RunError(f"stage '{unit.title}' failed: {one_line(exc)}" + (f" (log: {log})" if log else "")) from None
    except Exception as exc:  # noqa: BLE001 - a library failure inside a stage: one line, and where the log is
        if debug:
            raise
        err = RunError(f"stage '{unit.title}' failed: {type(exc).__name__}: {one_line(exc)}"
                       + (f" (log: {log})" if log else ""))
        err.exit_code = 1
        raise err from None
    display.done(i, unit, result)
    return result




# ------------------------------------------------------------------------------ results
def _read(result: StageResult) -> dict[str, Any]:
    return json.loads(result.path("check").read_text())


def collect(plan: Plan, done: dict[str, StageResult], command: str) -> dict[str, Any]:
    """Everything the report shows, from the finished stages (see edgesr.report.build for the format)."""
    from ..data.imresize import imresize
    from ..host import machine as _machine

    r = plan.recipe
    name, scale = r.model.label, r.model.scale
    benches = stages.open_eval(r.data.eval, scale)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    crop_files: dict[str, list[Path]] = {}
    base = {"model": name, "scale": scale}
    for unit, meta in plan.checks.items():
        res = done[unit]
        data = _read(res)
        crop_files[unit] = [res.dir / c for c in res.outputs.get("crops", [])]
        if meta["kind"] in ("pytorch", "simulated"):
            sim = meta["kind"] == "simulated"
            for ds, q in data["quality"].items():
                rows.append({**base, "target": meta["target"], "precision": meta["precision"], "dataset": ds,
                             "runtime": f"PyTorch fake-quant (simulating {meta['target']})" if sim
                             else "PyTorch eager",
                             "images": q["images"], "psnr_y": q["psnr_y"], "ssim_y": q["ssim_y"], "parity": None,
                             "latency_ms": data["latency_ms"], "size_bytes": None, "delegation": None,
                             "measured_in": "pytorch-simulated" if sim else "runtime", "command": data["command"],
                             "artifact": None,
                             "notes": ["whole images; latency is PyTorch eager on one window"] if not sim else
                             ["int8 simulated by fake-quant in PyTorch (whole images), not run in the runtime"]})
            continue
        label = f"{meta['target']} {meta['precision']}"
        notes += [f"{label}: {n.removeprefix(meta['precision'] + ': ')}" for n in data.get("notes", [])]
        a = data["artifact"]
        d = data.get("delegation")
        common = {**base, "target": meta["target"], "precision": meta["precision"],
                  "runtime": data["runtime"]["name"], "size_bytes": a.get("file_size_bytes"),
                  "delegation": {"percent": d["percent_delegated"], "backend": d.get("backend", ""),
                                 "not_delegated": d.get("not_delegated", {})} if d else None,
                  "command": data["command"], "artifact": a.get("path")}
        if data["status"] != "ran":
            for b in benches:
                rows.append({**common, "dataset": b.name, "images": len(b), "psnr_y": None, "ssim_y": None,
                             "parity": None, "latency_ms": None, "measured_in": "converted, not run",
                             "notes": [data["status"]]})
            continue
        p = data.get("parity") or {}
        for ds, q in data["quality"].items():
            rows.append({**common, "dataset": ds, "images": q["images"], "psnr_y": q["psnr_y"], "ssim_y": q["ssim_y"],
                         "parity": {"max_abs": p.get("max_abs_diff"), "psnr": p.get("psnr_vs_torch_db"),
                                    "reference": _parity_reference(meta["precision"])} if p else None,
                         "latency_ms": data["latency_ms"], "measured_in": "runtime", "notes": []})

    # crops: HR / bicubic from the data, fp32 / int8 from the stages, one figure per runtime
    crops = []
    windows = stages.crop_windows(benches, r.check.crops if r.check else 0, plan.size)
    bench0 = benches[0] if benches else None
    for i, win in enumerate(windows):
        pair = next(p for p in bench0.pairs if p.name == win.image)
        hr = pair.load_hr()[win.y * scale:(win.y + win.h) * scale, win.x * scale:(win.x + win.w) * scale]
        lr_u8 = pair.load_lr()[win.y:win.y + win.h, win.x:win.x + win.w]
        bic = imresize(lr_u8, scale=scale)
        # show the centre of the window (enough context around it was computed) at a zoom where pixels count
        ch, cw = min(win.h, max(32, win.h // 2)), min(win.w, max(32, win.w // 2))
        oy, ox = (win.h - ch) // 2 * scale, (win.w - cw) // 2 * scale
        view = (slice(oy, oy + ch * scale), slice(ox, ox + cw * scale))
        box = [win.y * scale + oy, win.x * scale + ox, ch * scale, cw * scale]

        def pick(unit: str, lab: str) -> dict[str, Any] | None:
            files = crop_files.get(unit) or []
            return {"label": lab, "image": _load_png(files[i])[view]} if i < len(files) else None

        groups: list[tuple[str, dict | None, dict | None]] = []
        sims = [t for t in plan.quantized if f"check pytorch-int8-{t}" in plan.checks]
        if "check pytorch-fp32" in plan.checks or sims:
            for target in sims or [""]:
                groups.append(("PyTorch" + (f" (int8 simulating {target})" if target else ""),
                               pick("check pytorch-fp32", "PyTorch fp32"),
                               pick(f"check pytorch-int8-{target}", f"{target} int8 (simulated)") if target else None))
        for target in dict.fromkeys(t for t, _ in plan.artifacts):
            f32, i8 = pick(f"check {target}-fp32", f"{target} fp32"), pick(f"check {target}-int8", f"{target} int8")
            if f32 or i8:
                groups.append((target, f32, i8))
        for runtime, f32, i8 in groups:
            crops.append({"dataset": win.dataset, "image": win.image, "box": box, "runtime": runtime,
                          "hr": hr[view], "bicubic": bic[view], "fp32": f32, "int8": i8})

    sens = {}
    for target in plan.quantized:
        res = done.get(f"quantize {target}")
        if res is not None and res.outputs.get("sensitivity"):
            sens[target] = json.loads(res.path("sensitivity").read_text())
    not_run = sorted({row["target"] for row in rows if row["measured_in"] == "converted, not run"})
    if not_run:
        notes.insert(0, f"{', '.join(not_run)}: converted, not run on this machine (no numbers are reported for it)")
    return {
        "title": (r.report.title if r.report and r.report.title else f"edgesr run: {name} x{scale}"),
        "command": command,
        "recipe": to_dict(r),
        "environment": {"machine": _machine(), "python": sys.version.split()[0], "versions": _versions()},
        "datasets": [{"name": b.name, "images": len(b), "source": b.source} for b in benches],
        "rows": rows,
        "sensitivity": sens,
        "sensitivity_layers": r.report.sensitivity_layers if r.report else 15,
        "crops": crops,
        "notes": list(dict.fromkeys(notes)),
    }


def _load_png(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _parity_reference(precision: str) -> str:
    what = "the fake-quant int8 model" if precision == "int8" else "the fp32 model"
    return f"PyTorch ({what} the artifact was exported from), same windows"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"edgesr": __version__}
    for dist in ("torch", "executorch", "torchao", "litert-torch", "ai-edge-litert", "coremltools", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def summary(report: dict[str, Any]) -> str:
    """The console table printed at the end of a run."""
    lines = [f"{'row':<34} {'dataset':<18} {'PSNR-Y':>8} {'drop':>7} {'ms':>8}  measured in"]
    for row in report["rows"]:
        lab = f"{row['target']} {row['precision']}"
        psnr = "-" if row["psnr_y"] is None else f"{row['psnr_y']:.3f}"
        drop = "-" if row["drop_db"] is None else f"{row['drop_db']:+.3f}"
        lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']['median']:.1f}"
        lines.append(f"{lab:<34} {row['dataset'][:18]:<18} {psnr:>8} {drop:>7} {lat:>8}  {row['measured_in']}")
    return "\n".join(lines)


__all__ = ["run", "build_plan", "Plan", "Unit", "preflight", "prepare_out", "collect", "summary", "RunInterrupted"]
