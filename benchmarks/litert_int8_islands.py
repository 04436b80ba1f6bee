"""Is LiteRT int8 slow because of edgesr's float islands? The same network as int8 .tflite with more and more ops
left float, timed interleaved with its fp32 .tflite in one run.

    python benchmarks/litert_int8_islands.py --model safmn_ntire --train path/to/T91 path/to/BSD200 --size 176x320
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="safmn_ntire")
    p.add_argument("--train", nargs="+", required=True, type=Path, help="HR folders (calibration: 4 of 5 images)")
    p.add_argument("--size", default="176x320")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "out" / "litert_int8_islands")
    args = p.parse_args(argv)

    import torch

    from edgesr.export import export
    from edgesr.host import machine
    from edgesr.models import create
    from edgesr.quantize import QuantConfig, ptq
    from edgesr.quantize.auto import split_images
    from latency import interleaved

    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    model = create(args.model, 4, weights="zoo")
    calib = [str(c) for c in split_images(args.train)[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / "fp32.tflite"]
    export(model, "tflite", "fp32", size, paths[0])
    for name, cfg in [("defaults", QuantConfig()), ("first/last float", QuantConfig(keep_float=["first", "last"])),
                      ("+ float adds", QuantConfig(keep_float=["first", "last"], float_adds=True)),
                      ("+ outlier guard 8", QuantConfig(keep_float=["first", "last"], float_adds=True,
                                                        outlier_ratio=8.0))]:
        path = args.out / f"int8_{name.replace('/', '').replace(' ', '_').replace('+', 'plus')}.tflite"
        export(model, "tflite", "int8", size, path, quantized=ptq(model, "tflite", calib, cfg))
        paths.append(path)
    print(f"{machine()}; {args.threads} threads; interleaved medians of {args.rounds}")
    for row in interleaved(paths, args.threads, args.rounds):
        up = f"{row['speedup_vs_fp32']:.2f}x" if row["speedup_vs_fp32"] else "-"
        print(f"| {row['artifact']} | {row['median_ms']:.0f} ms | {up} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
