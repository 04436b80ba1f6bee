"""The training loop: one function, CPU / CUDA / torchrun DDP, exact resume, atomic checkpoints."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import to_dict
from ..errors import EdgesrError
from ..io_utils import atomic_write_text
from ..models import ModelSpec, save_checkpoint
from ..reparam import load as load_model
from ..models.checkpoint import atomic_torch_save
from .distill import Distiller, capture_features
from .losses import fft_l1
from .patches import PatchDataset, StepSampler
from .recipe import ScheduleSpec, TrainRecipe

STATE_FILE = "last.ckpt"
MODEL_FILE = "model.pt"
LOG_FILE = "train_log.jsonl"


class TrainingInterrupted(EdgesrError):
    """Ctrl-C or SIGTERM: the state was saved and ``--resume`` continues from it."""

    exit_code = 130


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def lr_at(step: int, base: float, total: int, spec: ScheduleSpec) -> float:
    """Learning rate of ``step`` as a pure function: nothing to save, nothing to drift on resume."""
    if spec.warmup and step < spec.warmup:
        return base * (step + 1) / spec.warmup
    if spec.kind == "constant":
        return base
    if spec.kind == "multistep":
        return base * spec.gamma ** sum(step >= m for m in spec.milestones)
    span = max(1, total - spec.warmup)
    t = (step - spec.warmup) / span
    return spec.eta_min + 0.5 * (base - spec.eta_min) * (1 + math.cos(math.pi * t))


def train(recipe: TrainRecipe, out_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train ``recipe`` into ``out_dir``; returns the final edgesr checkpoint (EMA weights if EMA is on)."""
    out = Path(out_dir)
    d = _init_distributed()
    state_path = out / STATE_FILE
    if d.main:
        _check_out_dir(out, resume)
    if d.world > 1:
        dist.barrier()
    device = _pick_device(recipe.device, d)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)

    model = load_model(ModelSpec(recipe.model.name, recipe.model.scale, weights=recipe.model.weights,
                                 kwargs=dict(recipe.model.overrides),
                                 input_range=recipe.model.input_range)).to(device).train()
    if recipe.model.expand:  # recorded in the saved recipe, so create() rebuilds it from the checkpoint
        from ..reparam import expand

        model = expand(model, recipe.model.expand).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if recipe.ema > 0 else None
    distiller = None
    if recipe.teacher is not None:
        t = recipe.teacher
        teacher = load_model(ModelSpec(t.name, t.scale or recipe.model.scale, weights=t.weights)).to(device)
        distiller = Distiller(teacher, model, t.output_weight, t.feature_weight).to(device)
    trainable = list(model.parameters()) + (list(distiller.adapter.parameters())
                                           if distiller is not None and distiller.adapter is not None else [])
    opt = torch.optim.Adam(trainable, lr=recipe.optim.lr, betas=tuple(recipe.optim.betas),
                           weight_decay=recipe.optim.weight_decay)
    start = 0
    if resume:
        start = _load_state(state_path, model, ema, distiller, opt)
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    offline = distiller is not None and bool(recipe.teacher and recipe.teacher.precompute)
    dataset = PatchDataset(recipe.data.train, recipe.model.scale, recipe.data.patch_size, recipe.seed,
                           recipe.data.augment, progress=progress and d.main,
                           teacher=distiller.teacher if offline else None, device=device)
    per_rank = recipe.data.batch_size // d.world
    sampler = StepSampler(start, recipe.iterations, recipe.data.batch_size, d.rank, d.world)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=recipe.data.workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.amp)
    use_amp = amp_dtype is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    log = _Log(out / LOG_FILE, start, enabled=d.main)
    bar = tqdm(total=recipe.iterations, initial=start, desc=f"train {recipe.model.name} x{recipe.model.scale}",
               unit="it", disable=not (progress and d.main), dynamic_ncols=True)
    step = start
    log.write({"event": "start", "step": start, "world": d.world, "global_batch": recipe.data.batch_size,
               "per_rank_batch": per_rank, "device": str(device), "train_images": len(dataset.images)})
    stop = _StopRequest()
    try:
        t0 = time.perf_counter()
        for batch in loader:
            lr_img, hr_img, *cached = (t.to(device, non_blocking=True) for t in batch)
            lr_now = lr_at(step, recipe.optim.lr, recipe.iterations, recipe.schedule)
            for g in opt.param_groups:
                g["lr"] = lr_now
            terms = _step_losses(net, model, distiller, recipe, lr_img, hr_img, use_amp, amp_dtype,
                                 cached[0] if cached else None)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if distiller is not None and distiller.adapter is not None and d.world > 1:
                _allreduce_grads(distiller.adapter)
            if recipe.optim.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable, recipe.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                _ema_update(ema, model, recipe.ema)
            step += 1
            bar.update(1)
            if step % recipe.log_every == 0 or step == recipe.iterations:
                values = {k: float(v.detach()) for k, v in terms.items()}
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr_now:.2e}")
                log.write({"step": step, "loss": float(loss.detach()), **values, "lr": lr_now,
                           "it_s": (step - start) / max(time.perf_counter() - t0, 1e-9)})
            if recipe.val_every and step % recipe.val_every == 0 and step < recipe.iterations and d.main:
                log.write({"step": step, "val": _validate(ema or model, recipe, device)})
                model.train()
            if stop.requested:  # checked between steps, so the saved state is a whole step
                if d.main:
                    _save_state(state_path, step, model, ema, distiller, opt, recipe)
                raise TrainingInterrupted(f"interrupted at step {step}/{recipe.iterations}; state saved to "
                                          f"{state_path}; continue with --resume")
            if step % recipe.checkpoint_every == 0 and d.main:
                _save_state(state_path, step, model, ema, distiller, opt, recipe)
    finally:
        stop.restore()
        bar.close()
    final = out / MODEL_FILE
    if d.main:
        _save_state(state_path, step, model, ema, distiller, opt, recipe)
        val = _validate(ema or model, recipe, device) if recipe.data.val else {}
        if val:
            log.write({"step": step, "val": val})
        save_checkpoint(final, (ema or model).cpu(), model_name=recipe.model.name, scale=recipe.model.scale,
                        config=recipe.model.overrides, recipe=to_dict(recipe),
                        extra={"train": {"iterations": step, "ema": recipe.ema > 0, "val": val}})
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _step_losses(net: nn.Module, model: nn.Module, distiller: Distiller | None, recipe: TrainRecipe,
                 lr_img: torch.Tensor, hr_img: torch.Tensor, use_amp: bool,
                 amp_dtype: torch.dtype | None, teacher_sr: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    want_feat = distiller is not None and distiller.adapter is not None
    with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
        if want_feat:
            with capture_features(model) as feats:
                sr = net(lr_img)
            s_feat = feats[-1]
        else:
            sr, s_feat = net(lr_img), None
        terms: dict[str, torch.Tensor] = {}
        if recipe.loss.l1:
            terms["l1"] = recipe.loss.l1 * F.l1_loss(sr, hr_img)
        if recipe.loss.fft:
            terms["fft"] = recipe.loss.fft * fft_l1(sr, hr_img)
        if distiller is not None:
            t_sr, t_feat = (teacher_sr, None) if teacher_sr is not None else distiller.teacher_forward(lr_img)
            terms.update(distiller.losses(sr, s_feat, t_sr, t_feat))
    if not terms:
        raise EdgesrError("every loss weight is zero: nothing to train")
    return {k: v.float() for k, v in terms.items()}


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _allreduce_grads(module: nn.Module) -> None:
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _validate(model: nn.Module, recipe: TrainRecipe, device: torch.device) -> dict[str, float]:
    from ..data.folders import open_benchmark
    from ..evaluate import evaluate

    model.eval()
    results = {}
    for folder in recipe.data.val:
        bench = open_benchmark(folder, recipe.model.scale)
        results[bench.name] = round(evaluate(model, bench, recipe.model.scale, device=device, progress=False).psnr_y, 4)
    return results


def _save_state(path: Path, step: int, model: nn.Module, ema: nn.Module | None, distiller: Distiller | None,
                opt: torch.optim.Optimizer, recipe: TrainRecipe) -> None:
    state = {
        "format": "edgesr-train-state",
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "adapter": distiller.adapter.state_dict() if distiller is not None and distiller.adapter is not None else None,
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
        "recipe": to_dict(recipe),
    }
    atomic_torch_save(state, path)


def _load_state(path: Path, model: nn.Module, ema: nn.Module | None, distiller: Distiller | None,
                opt: torch.optim.Optimizer) -> int:
    if not path.is_file():
        raise EdgesrError(f"nothing to resume: {path} does not exist")
    state = read_training_state(path)
    model.load_state_dict(state["model"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    if distiller is not None and distiller.adapter is not None and state["adapter"] is not None:
        distiller.adapter.load_state_dict(state["adapter"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    _set_numpy_rng_state(state["rng"]["numpy"])
    return int(state["step"])


def read_training_state(path: Path) -> dict:
    """The training state, loaded with ``weights_only=True`` (tensors and plain Python values only: a state
    file never runs code on load); a file that is not one gets one line saying so."""
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise EdgesrError(f"{path} holds objects other than tensors and plain values; not an edgesr "
                              "training state") from None
        raise EdgesrError(f"{path} is not a PyTorch checkpoint") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "zip" in first.lower() or "magic" in first.lower() or "pytorchstreamreader" in first.lower():
            raise EdgesrError(f"{path} is not a PyTorch checkpoint") from None
        raise EdgesrError(f"cannot read training state {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != "edgesr-train-state":
        raise EdgesrError(f"{path} is not an edgesr training state")
    return state


def _numpy_rng_state() -> dict:
    """NumPy's RNG state as a tensor and plain values (what ``weights_only`` loading accepts)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(s: dict) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                         s["cached_gaussian"]))


def _check_out_dir(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EdgesrError(f"--out {out} exists and is not a folder")
    if not resume and (out / STATE_FILE).exists():
        raise EdgesrError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesrError(f"cannot create output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise EdgesrError(f"output folder is not writable: {out}")


def _init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(rank, world, local)


def _pick_device(spec: str, d: Dist) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EdgesrError("device cuda requested but no CUDA GPU is available")
        if d.world > 1:
            spec = f"cuda:{d.local_rank}"
        device = torch.device(spec)
        torch.cuda.set_device(device)
        return device
    if spec != "cpu":
        raise EdgesrError(f"unknown device {spec!r} (auto, cpu, cuda, cuda:N)")
    return torch.device("cpu")


class _StopRequest:
    """First Ctrl-C / SIGTERM asks the loop to stop after the current step; a second one is immediate."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Log:
    """train_log.jsonl; on resume, lines past the checkpoint's step are dropped (they will be redone)."""

    def __init__(self, path: Path, start: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if start and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        atomic_write_text(path, "".join(k + "\n" for k in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
