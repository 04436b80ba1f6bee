"""Per-image int8 drops of one configuration, and how a set's mean moves with a few pixels of padding.

A budget of hundredths of a dB is checked on means over images whose single drops move by several hundredths
either way. This prints, for one int8 configuration (PTQ, calibrated on ``--train`` as ``--auto`` splits it):
the per-image drop (fake-quant vs fp32 on the same input) on the held-out validation images and on each
``--eval`` set, with the standard error of each mean; then the same int8 model on the first ``--eval`` set's
images edge-padded (replicate) by each ``--pads`` width and cropped back, against fp32 on the same padded input.
If those means scatter as widely as the budget, the set cannot resolve the budget.

    python benchmarks/int8_per_image.py --model eimn_a --target executorch --train T91 BSD200 \\
        --eval Set5 Set14 --config '{"keep_float": ["first", "last"], "float_adds": true, "float_muls": true,
                                     "outlier_ratio": 4.0, "scale_search": true}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="eimn_a")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--target", default="executorch")
    p.add_argument("--train", nargs="+", required=True, type=Path, help="calibration + validation HR folders")
    p.add_argument("--eval", nargs="+", required=True, type=Path, help="evaluation HR folders")
    p.add_argument("--config", type=json.loads, default={}, metavar="JSON", help="QuantConfig fields")
    p.add_argument("--pads", nargs="*", type=int, default=[4, 16, 48], help="edge-padding widths (LR px)")
    p.add_argument("--val-count", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the numbers here (JSON)")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from edgesr.data.folders import open_benchmark
    from edgesr.data.io import to_tensor, to_uint8
    from edgesr.evaluate import evaluate
    from edgesr.metrics import paired_drop_se, psnr_y
    from edgesr.models import create, size_multiple
    from edgesr.quantize import QuantConfig, ptq
    from edgesr.quantize.auto import _psnrs, split_images, validation_pairs

    torch.set_num_threads(args.threads)
    s = args.scale
    model = create(args.model, s, weights="zoo").eval()
    calib, val = split_images(args.train)
    q = ptq(model, args.target, [str(x) for x in calib], QuantConfig(**args.config), progress=True)
    ref = q.same_input(model)
    out: dict = {"model": args.model, "target": args.target, "config": args.config, "sets": {}, "padded": {}}

    def show(name: str, fp: list[float], i8: list[float], names: list[str]) -> None:
        d = np.asarray(fp) - np.asarray(i8)
        out["sets"][name] = {"mean_drop_db": float(d.mean()), "se_db": paired_drop_se(fp, i8),
                             "per_image": dict(zip(names, d.round(4).tolist()))}
        worst = ", ".join(f"{names[i]} {d[i]:+.3f}" for i in np.argsort(-np.abs(d))[:5])
        print(f"{name:<12} {d.mean():+.4f} ± {paired_drop_se(fp, i8) or 0:.4f} dB over {len(d)} images "
              f"(SD {d.std(ddof=1) if len(d) > 1 else 0:.3f}); largest: {worst}", flush=True)

    pairs = validation_pairs([str(x) for x in val], s, args.val_count, mult=size_multiple(model))  # as --auto
    show("validation", _psnrs(ref, pairs, s), _psnrs(q, pairs, s), [f"val{i}" for i in range(len(pairs))])
    benches = [open_benchmark(f, s) for f in args.eval]
    for b in benches:
        fp, i8 = evaluate(ref, b, s).per_image, evaluate(q, b, s).per_image
        names = list(i8)
        show(b.name, [fp[n]["psnr_y"] for n in names], [i8[n]["psnr_y"] for n in names], names)

    b = benches[0]
    for k in args.pads:
        fp, i8 = [], []
        for pair in b.pairs:
            lr, hr = to_tensor(pair.load_lr()), pair.load_hr()
            h, w = lr.shape[-2:]
            x = F.pad(lr, (k, k, k, k), mode="replicate")
            with torch.no_grad():
                crop = (..., slice(k * s, (k + h) * s), slice(k * s, (k + w) * s))
                fp.append(psnr_y(to_uint8(ref(x)[crop]), hr, s))
                i8.append(psnr_y(to_uint8(q(x)[crop]), hr, s))
        d = np.asarray(fp) - np.asarray(i8)
        out["padded"][k] = {"mean_drop_db": float(d.mean()), "se_db": paired_drop_se(fp, i8)}
        print(f"{b.name} padded {k:>3} px: {d.mean():+.4f} ± {paired_drop_se(fp, i8) or 0:.4f} dB", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
