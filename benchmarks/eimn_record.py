"""Reproduce the EIMN authors' record.txt with edgesr's own evaluation path.

LR images are made by edgesr from the HR folders (MATLAB-bicubic), not taken from the reference LR.
The authors evaluated on BasicSR's benchmark pack: HR mod-cropped to 12 (``GTmod12``), LR made by MATLAB
``imresize`` of the double image. ``--lr-convention basicsr`` (the default here) reproduces that;
``--lr-convention matlab`` shows what the SelfExSR-style LR (mod-crop to scale, uint8 resize) gives.
Prints one row per model x scale x set: ours, authors', and the differences; exits 1 when any row is
outside 0.01 dB PSNR or 0.0002 SSIM.

    .venv/bin/python benchmarks/eimn_record.py                 # all 5 weights x Set5/Set14/B100
    .venv/bin/python benchmarks/eimn_record.py --only A_x4 --sets Set5
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from edgesr.data.folders import open_benchmark
from edgesr.evaluate import evaluate
from edgesr.models import create

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = ("A_x2", "A_x3", "A_x4", "L_x2", "L_x3")
RECORD_SET = {"Set5": "Set5", "Set14": "Set14", "B100": "BSDS100"}
PSNR_TOL, SSIM_TOL = 0.01, 0.0002


def read_record(path: Path) -> dict[tuple[str, int, str], tuple[float, float]]:
    """record.txt -> {(variant 'A'|'L', scale, set): (psnr, ssim)}."""
    out, variant = {}, None
    for line in path.read_text().splitlines():
        if m := re.match(r"EIMN_([AL]):", line.strip()):
            variant = m.group(1)
        elif m := re.match(r"Scale:(\d) Dataset:(\S+) Avg_psnr:([\d.]+) Avg_ssim:([\d.]+)", line.strip()):
            out[(variant, int(m.group(1)), m.group(2))] = (float(m.group(3)), float(m.group(4)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--only", nargs="+", default=list(WEIGHTS), choices=WEIGHTS)
    ap.add_argument("--sets", nargs="+", default=list(RECORD_SET), choices=list(RECORD_SET))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr-convention", choices=("basicsr", "matlab"), default="basicsr")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = read_record(args.shared / "weights" / "EIMN" / "record.txt")
    rows, ok = [], True
    print(f"{'model':<10} {'set':<6} {'PSNR ours':>10} {'authors':>9} {'Δ dB':>8} "
          f"{'SSIM ours':>10} {'authors':>9} {'Δ':>8}  ok")
    for tag in args.only:
        variant, scale = tag[0], int(tag[-1])
        model = create(f"eimn_{variant.lower()}", scale,
                       weights=args.shared / "weights" / "EIMN" / f"EIMN_{tag}.pth")
        for set_name in args.sets:
            bench = open_benchmark(args.shared / "data" / set_name, scale, convention=args.lr_convention)
            res = evaluate(model, bench, scale, progress=False)
            ref_psnr, ref_ssim = record[(variant, scale, RECORD_SET[set_name])]
            dp, ds = res.psnr_y - ref_psnr, res.ssim_y - ref_ssim
            good = abs(dp) <= PSNR_TOL and abs(ds) <= SSIM_TOL
            ok &= good
            print(f"EIMN_{tag:<5} {set_name:<6} {res.psnr_y:10.4f} {ref_psnr:9.4f} {dp:+8.4f} "
                  f"{res.ssim_y:10.5f} {ref_ssim:9.5f} {ds:+8.5f}  {'yes' if good else 'NO'}", flush=True)
            rows.append((tag, set_name, res.psnr_y, ref_psnr, res.ssim_y, ref_ssim))
    print(f"LR convention: {args.lr_convention}")
    print(f"tolerance: |Δ PSNR| <= {PSNR_TOL} dB, |Δ SSIM| <= {SSIM_TOL}: {'all pass' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
