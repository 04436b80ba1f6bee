"""Quantization-aware training: fine-tune the fake-quant graph on patches, distilling from full precision."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import UsageError
from .config import QuantConfig, check_target
from ..models import size_multiple, spec_of
from .graph import QuantizedSR, export_form, run_padded
from .ptq import calibrate, calibration_inputs, finish, guard_outliers, model_scale, prepare


def qat(model: nn.Module, target: str, train_images: Sequence[str | Path], config: QuantConfig | None = None,
        *, teacher: nn.Module | None = None, calib_images: Sequence | None = None,
        progress: bool = False) -> QuantizedSR:
    """QAT int8 for ``target`` on HR image folders: loss = gt_weight·L1(HR) + kd_weight·L1(teacher SR).

    The teacher defaults to the full-precision model itself (self-distillation keeps the int8 model close to
    what was validated in fp32). Ranges start from a calibration pass, move with the weights for the first
    ``freeze_observers_at`` of the steps, then freeze, so the last steps train against the final grid.
    """
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval, move_exported_model_to_train

    from ..train.patches import PatchDataset, StepSampler

    cfg = config or QuantConfig()
    cfg.validate()
    check_target(target)
    if not train_images:
        raise UsageError("quantize --mode qat needs training images (--data FOLDER ...)")
    if getattr(model, "quantized", False):
        raise UsageError("quantize: the model is already quantized")
    model = copy.deepcopy(model).eval()
    scale = model_scale(model)
    mult = size_multiple(model)
    if cfg.patch_size % (scale * mult):
        raise UsageError(f"quantize: patch_size {cfg.patch_size} must be a multiple of {scale * mult} "
                         f"(scale x{scale} × the model's size multiple {mult})")
    torch.manual_seed(cfg.seed)
    data = PatchDataset(train_images, scale, cfg.patch_size, cfg.seed, progress=progress)
    loader = DataLoader(data, batch_size=cfg.batch_size,
                        sampler=StepSampler(0, cfg.iterations, cfg.batch_size), num_workers=0)
    kd_model = export_form(teacher if teacher is not None else model, clamp_output=cfg.clamp_output).eval()
    kd_model.requires_grad_(False)

    calib = calibration_inputs(calib_images or train_images, scale, cfg, mult)
    cfg, guard_info = guard_outliers(model, cfg, calib, target)
    weight_info: dict = {}
    prepared = prepare(model, target, cfg, qat=True, inputs=calib, info=weight_info)  # QAT starts from them
    calibrate(prepared, calib)            # ranges start where PTQ would put them
    move_exported_model_to_train(prepared)
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    freeze_at = int(round(cfg.freeze_observers_at * cfg.iterations))
    bar = tqdm(loader, total=cfg.iterations, desc=f"QAT {target}", unit="it", disable=not progress)
    last, skipped = {}, 0
    for step, (lr_img, hr) in enumerate(bar):
        if step == freeze_at:
            prepared.apply(disable_observer)
        for group in opt.param_groups:  # cosine to 1 % of the start
            group["lr"] = cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.iterations))))
        sr = run_padded(prepared, lr_img)
        loss = cfg.gt_weight * F.l1_loss(sr, hr)
        if cfg.kd_weight > 0:
            with torch.no_grad():
                ref = kd_model(lr_img)
            loss = loss + cfg.kd_weight * F.l1_loss(sr, ref)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        bad = _zero_nonfinite_grads(params)
        skipped += bool(bad)
        opt.step()
        last = {"loss": loss.item()}
        bar.set_postfix(loss=f"{last['loss']:.4f}")
    move_exported_model_to_eval(prepared)
    info = {"iterations": cfg.iterations, "final_loss": last.get("loss"), "calibration_images": len(calib),
            "steps_with_nonfinite_gradients": skipped,
            "teacher": (spec_of(teacher).label if teacher is not None else "self"), **guard_info, **weight_info}
    return finish(model, prepared, target, "qat", cfg, scale, info)


def _zero_nonfinite_grads(params: list[torch.Tensor]) -> int:
    """Zero the NaN/inf entries of the gradients; how many there were. int8 makes exact zeros common, and a
    norm of an all-zero channel (SAFMN NTIRE's GRN: sqrt(Σx²)) has an infinite gradient there: one such step
    left unguarded makes weights NaN, which fake-quantize to garbage (SAFMN NTIRE x4: 20 dB lost in 20 steps)."""
    bad = 0
    for p in params:
        if p.grad is not None:
            mask = ~torch.isfinite(p.grad)
            if mask.any():
                bad += int(mask.sum())
                p.grad[mask] = 0.0
    return bad
