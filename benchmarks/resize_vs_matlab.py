"""Prove edgesr's bicubic resize reproduces MATLAB's ``imresize(hr, 1/s, 'bicubic')``.

For every image of the SelfExSR reference pack (Set5, Set14, BSD100 at x2/x3/x4): load the HR from
``shared/data`` with edgesr's own loader, mod-crop it, downscale it with ``edgesr.data.imresize``
and compare with MATLAB's LR byte for byte. Where the pack also ships MATLAB's mod-cropped HR
(Set5, Set14) that is checked too. Grey images (Set14 bridge) are stored grey in the pack; both
sides go through ``load_image``, which replicates grey to three channels.

Prints one row per set × scale; exits 1 unless every row has >= 99.9% identical uint8 values
and no value off by more than 1.

    .venv/bin/python benchmarks/resize_vs_matlab.py
    .venv/bin/python benchmarks/resize_vs_matlab.py --sets Set5 --scales 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgesr.data import imresize, load_image, modcrop

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SETS = {"Set5": "Set5", "Set14": "Set14", "BSD100": "B100"}  # reference pack name -> HR folder
MIN_IDENTICAL, MAX_DIFF = 99.9, 1


def read_name_map(path: Path) -> dict[str, str]:
    """name_map.txt -> {'img_001': 'baby'}; lines are 'img_001 baby.png' or 'SelfExSR:img_001.png 101085.jpg ...'."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        ref = Path(parts[0].split(":")[-1]).stem
        out[ref] = Path(parts[1]).stem
    return out


def find_hr(folder: Path, stem: str) -> Path:
    hits = [p for p in folder.iterdir() if p.stem == stem]
    if len(hits) != 1:
        raise SystemExit(f"HR for {stem!r} not found (or ambiguous) in {folder}")
    return hits[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4], choices=[2, 3, 4])
    args = ap.parse_args()
    data = args.shared / "data"
    ref_root = data / "reference_lr_matlab"

    print(f"{'set':<7} {'scale':>5} {'images':>6} {'values':>11} {'identical %':>12} {'max|diff|':>9} "
          f"{'HR match':>8} {'s/img':>6}  ok")
    failed = False
    for set_name in args.sets:
        names = read_name_map(ref_root / set_name / "name_map.txt")
        for scale in args.scales:
            total = same = worst = 0
            hr_checked = hr_ok = 0
            seconds = 0.0
            for ref_name, stem in sorted(names.items()):
                hr = modcrop(load_image(find_hr(data / SETS[set_name], stem)), scale)
                ref_dir = ref_root / set_name / f"X{scale}"
                ref_lr = load_image(ref_dir / f"{ref_name}_SRF_{scale}_LR.png")
                ref_hr_path = ref_dir / f"{ref_name}_SRF_{scale}_HR.png"
                if ref_hr_path.exists():
                    ref_hr = load_image(ref_hr_path)
                    hr_checked += 1
                    hr_ok += int(ref_hr.shape == hr.shape and np.array_equal(ref_hr, hr))
                start = time.perf_counter()
                lr = imresize(hr, scale=1.0 / scale)
                seconds += time.perf_counter() - start
                if lr.shape != ref_lr.shape:
                    print(f"  {set_name}/{stem} x{scale}: shape {lr.shape} vs MATLAB {ref_lr.shape}")
                    failed = True
                    continue
                diff = np.abs(lr.astype(np.int16) - ref_lr.astype(np.int16))
                total += diff.size
                same += int((diff == 0).sum())
                worst = max(worst, int(diff.max()))
            pct = 100.0 * same / total if total else 0.0
            ok = total > 0 and pct >= MIN_IDENTICAL and worst <= MAX_DIFF and hr_ok == hr_checked
            failed |= not ok
            hr_col = f"{hr_ok}/{hr_checked}" if hr_checked else "n/a"
            print(f"{set_name:<7} {'x' + str(scale):>5} {len(names):>6} {total:>11,} {pct:>12.4f} {worst:>9d} "
                  f"{hr_col:>8} {seconds / max(len(names), 1):>6.3f}  {'yes' if ok else 'NO'}", flush=True)
    print("PASS" if not failed else f"FAIL: need >= {MIN_IDENTICAL}% identical and max |diff| <= {MAX_DIFF}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
