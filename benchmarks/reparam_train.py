"""What training with multi-branch blocks buys at equal budget, after collapsing to the plain model.

Two runs of the same model (default SAFMN x4): plain, and with ``model.expand = KIND`` (the blocks are
function-preserving, so both start from the same function), same data (T91 + BSD200), seed, iterations,
batch, patch, schedule and EMA. The expanded run's final checkpoint is rebuilt by ``create`` from the
recipe it records, collapsed to plain convs (checked: same Set5 PSNR as the expanded form) and evaluated
like the plain run: Set5, Set14, B100, MATLAB-bicubic LR, PSNR-Y / SSIM-Y, border = scale.

    .venv/bin/python benchmarks/reparam_train.py --kind ecb --iterations 400     # ~20 min on 2 idle cores
    .venv/bin/python benchmarks/reparam_train.py --iterations 5 --sets Set5      # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch

from edgesr.config import from_dict
from edgesr.data.folders import open_benchmark
from edgesr.evaluate import evaluate
from edgesr.models import create
from edgesr.reparam import collapse, parse_expand, record_of
from edgesr.train import TrainRecipe, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def recipe_for(kind: str | None, args: argparse.Namespace) -> TrainRecipe:
    return from_dict(TrainRecipe, {
        "model": {"name": args.model, "scale": 4, "expand": kind},
        "data": {"train": [str(SHARED / "data" / "T91"), str(SHARED / "data" / "BSD200")],
                 "patch_size": args.patch, "batch_size": args.batch, "workers": 0},
        "iterations": args.iterations,
        "optim": {"lr": args.lr, "betas": [0.9, 0.99]},
        "schedule": {"kind": "cosine", "eta_min": 1e-5},
        "loss": {"l1": 1.0},
        "ema": args.ema,
        "seed": 10,
        "device": "cpu",
        "checkpoint_every": max(50, args.iterations // 4),
        "log_every": 25,
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="safmn")
    ap.add_argument("--kind", default="ecb", choices=("repvgg", "ecb", "sesr"))
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--patch", type=int, default=96, help="HR patch (LR = patch / 4)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "reparam_train")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    benches = {s: open_benchmark(SHARED / "data" / s, 4) for s in args.sets}
    rows = {}
    for kind in (None, args.kind):
        tag = f"{args.model}_x4_{kind or 'plain'}_{args.iterations}"
        run_dir = args.out / tag
        final = run_dir / "model.pt"
        t0 = time.perf_counter()
        if not final.exists():
            train(recipe_for(kind, args), run_dir, resume=(run_dir / "last.ckpt").exists(), progress=False)
        minutes = (time.perf_counter() - t0) / 60
        net = create(args.model, 4, weights=final)          # expanded structure rebuilt from the recipe
        assert record_of(net) == (parse_expand(kind) if kind else {}), record_of(net)
        row = {"kind": kind or "plain", "minutes": minutes}
        if kind:
            first = args.sets[0]
            row["expanded_" + first] = evaluate(net, benches[first], 4, progress=False).psnr_y
            net = collapse(copy.deepcopy(net))
        res = {s: evaluate(net, b, 4, progress=False) for s, b in benches.items()}
        row.update({s: {"psnr_y": r.psnr_y, "ssim_y": r.ssim_y} for s, r in res.items()})
        rows[row["kind"]] = row
        print(f"{tag:<28} " + "  ".join(f"{s} {r.psnr_y:.3f}/{r.ssim_y:.4f}" for s, r in res.items())
              + f"  (train {minutes:.1f} min)", flush=True)
    plain, rep = rows["plain"], rows[args.kind]
    first = args.sets[0]
    print(f"\nbudget: {args.model} x4, {args.iterations} iterations, batch {args.batch}, HR patch {args.patch}, "
          f"Adam lr {args.lr} cosine, EMA {args.ema}, seed 10, T91+BSD200; host "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads")
    print(f"{args.kind}: expanded vs collapsed {first} PSNR-Y {rep['expanded_' + first]:.4f} vs "
          f"{rep[first]['psnr_y']:.4f} dB; train time plain {plain['minutes']:.1f} min, "
          f"{args.kind} {rep['minutes']:.1f} min")
    print(f"{'set':<6} {'plain':>8} {args.kind + '→collapsed':>16} {'gain dB':>8}")
    for s in args.sets:
        print(f"{s:<6} {plain[s]['psnr_y']:8.3f} {rep[s]['psnr_y']:16.3f} {rep[s]['psnr_y'] - plain[s]['psnr_y']:+8.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}_{args.kind}_{args.iterations}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
