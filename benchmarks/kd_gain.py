"""What distillation from EIMN-A x4 buys small students, measured at equal budget.

For each student (SAFMN x4, SCNet-T x4): one run from scratch (L1 to ground truth) and one distilled
from the official EIMN-A x4 (L1 to ground truth + L1 to the teacher's SR), same data (T91 + BSD200),
iterations, batch, patch, schedule and seed. Both evaluated (EMA weights) on Set5, Set14, B100 with
edgesr's evaluation (MATLAB-bicubic LR, Y channel, border 4). ``--ship`` copies the better of each pair
into edgesr's zoo with a model card.

    .venv/bin/python benchmarks/kd_gain.py --iterations 1500            # ~1 h on 2 CPU cores
    .venv/bin/python benchmarks/kd_gain.py --models safmn --iterations 50 --sets Set5   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from edgesr.config import from_dict
from edgesr.data.folders import open_benchmark
from edgesr.evaluate import evaluate
from edgesr.models import create
from edgesr.train import TrainRecipe, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ZOO = ROOT / "edgesr" / "zoo"
LR = {"safmn": 1e-3, "scnet_t": 5e-4, "lamnet": 5e-4}


def recipe_for(model: str, kd: bool, args: argparse.Namespace) -> TrainRecipe:
    data = {
        "model": {"name": model, "scale": 4},
        "data": {"train": [str(SHARED / "data" / "T91"), str(SHARED / "data" / "BSD200")],
                 "patch_size": args.patch, "batch_size": args.batch, "workers": 0},
        "iterations": args.iterations,
        "optim": {"lr": LR[model], "betas": [0.9, 0.99]},
        "schedule": {"kind": "cosine", "eta_min": 1e-5},
        "loss": {"l1": 1.0},
        "ema": args.ema,
        "seed": 10,
        "device": args.device,
        "checkpoint_every": 250,
        "log_every": 25,
    }
    if kd:
        data["teacher"] = {"name": "eimn_a", "weights": "zoo", "output_weight": 1.0}
    return from_dict(TrainRecipe, data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["safmn", "scnet_t"], choices=sorted(LR))
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--patch", type=int, default=128, help="HR patch (LR = patch/4)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "kd")
    ap.add_argument("--variants", nargs="+", default=["scratch", "kd"], choices=["scratch", "kd"],
                    help="which runs of each pair to train (the gain table needs both)")
    ap.add_argument("--ship", action="store_true", help="copy the better model of each pair into the zoo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for model in args.models:
        for kd in [v == "kd" for v in args.variants]:
            tag = f"{model}_x4_{'kd' if kd else 'scratch'}"
            run_dir = args.out / tag
            final = run_dir / "model.pt"
            t0 = time.perf_counter()
            if not final.exists():
                train(recipe_for(model, kd, args), run_dir, resume=(run_dir / "last.ckpt").exists())
            minutes = (time.perf_counter() - t0) / 60
            net = create(model, 4, weights=final)
            res = {s: evaluate(net, open_benchmark(SHARED / "data" / s, 4), 4, progress=False) for s in args.sets}
            rows[tag] = {"model": model, "kd": kd, "minutes": minutes, "checkpoint": str(final),
                         **{s: {"psnr_y": r.psnr_y, "ssim_y": r.ssim_y} for s, r in res.items()}}
            print(f"{tag:<20} " + "  ".join(f"{s} {r.psnr_y:.3f}/{r.ssim_y:.4f}" for s, r in res.items())
                  + f"  ({minutes:.1f} min)", flush=True)
    print(f"\nbudget: {args.iterations} iterations, batch {args.batch}, HR patch {args.patch}, seed 10, "
          f"T91+BSD200; host {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'student':<10} {'set':<6} {'scratch':>8} {'KD':>8} {'gain dB':>8}")
    for model in args.models:
        a, b = rows.get(f"{model}_x4_scratch"), rows.get(f"{model}_x4_kd")
        for s in args.sets if a and b else []:
            print(f"{model:<10} {s:<6} {a[s]['psnr_y']:8.3f} {b[s]['psnr_y']:8.3f} "
                  f"{b[s]['psnr_y'] - a[s]['psnr_y']:+8.3f}")
        if args.ship:
            ship(model, a, b, args)
    (args.out / "kd_gain.json").write_text(json.dumps(rows, indent=2))
    return 0


def ship(model: str, scratch: dict | None, kd: dict | None, args: argparse.Namespace) -> None:
    """Copy the better run (by Set5 PSNR-Y) into the zoo and write its model card."""
    runs = [r for r in (kd, scratch) if r]
    best = max(runs, key=lambda r: r["Set5"]["psnr_y"])
    dst = ZOO / f"{model}_x4.pth"
    shutil.copyfile(best["checkpoint"], dst)
    how = "distilled from the official EIMN-A x4 (output-level L1, weight 1) + L1 to ground truth" if best["kd"] \
        else "trained from scratch with L1"
    lines = [f"# {model} x4 — edgesr zoo", "",
             f"- Weights: {how}; EMA {args.ema}.",
             f"- Data: T91 + BSD200 (291 images), HR patch {args.patch}, batch {args.batch}, flips/rotations, "
             f"LR by MATLAB-bicubic (edgesr).",
             f"- Schedule: {args.iterations} iterations, Adam lr {LR[model]} cosine to 1e-5, seed 10.",
             f"- Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
             f"{best['minutes']:.0f} min. A short CPU schedule: far below the papers' 500k GPU iterations.",
             "- Measured by edgesr (`benchmarks/kd_gain.py`; MATLAB-bicubic LR mod-crop 4, Y channel, border 4):",
             "", "| set | PSNR-Y | SSIM-Y | from scratch, same budget |", "|---|---|---|---|"]
    for s in args.sets:
        base = f"{scratch[s]['psnr_y']:.3f}" if scratch else "not run"
        lines.append(f"| {s} | {best[s]['psnr_y']:.3f} | {best[s]['ssim_y']:.4f} | {base} |")
    (ZOO / f"{model}_x4.md").write_text("\n".join(lines) + "\n")
    print(f"shipped {dst.relative_to(ROOT)} ({'KD' if best['kd'] else 'scratch'})")


if __name__ == "__main__":
    sys.exit(main())
