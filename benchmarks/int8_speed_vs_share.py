"""What an accuracy budget costs in speed: int8 configurations of one network, each with its validation drop
(the ``--auto`` budget's measure), its int8 share of conv MACs and its speed-up over fp32 in the runtime.

    python benchmarks/int8_speed_vs_share.py --model eimn_a --train T91 BSD200 --size 180x320 \
        --configs '{"defaults": {}, "guard 4, chosen": {"outlier_ratio": 4.0, "float_adds": true, ...}}'

Calibration and validation images come from ``--train`` as in ``--auto`` (every 5th held out); ``--cache`` takes a
``--auto`` trial cache (``OUT/<model>_<scheme>``) so configurations the search tried are not measured again.
The artifacts are timed interleaved with the fp32 artifact in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--target", default="executorch", choices=["executorch", "tflite"])
    p.add_argument("--train", nargs="+", required=True, type=Path, help="calibration + validation HR folders")
    p.add_argument("--configs", required=True, type=json.loads, metavar="JSON",
                   help='{"name": {QuantConfig fields}, ...}')
    p.add_argument("--size", default="180x320", help="artifact LR size")
    p.add_argument("--budget", type=float, default=0.03)
    p.add_argument("--cache", type=Path, default=None, help="an --auto trial cache to reuse")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "out" / "int8_speed_vs_share")
    args = p.parse_args(argv)

    import torch

    from edgesr.export import export
    from edgesr.export.runtimes import interleaved_latency
    from edgesr.host import machine
    from edgesr.models import create, size_multiple
    from edgesr.quantize import QuantConfig
    from edgesr.quantize.auto import VAL_COUNT, VAL_SIDE, _Search, split_images, validation_pairs
    from edgesr.quantize.ptq import calibration_inputs, ptq
    from edgesr.targets import suffix

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = create(args.model, 4, weights="zoo").eval()
    mult = size_multiple(model)
    size = (h // mult * mult, w // mult * mult)
    calib_paths, val_paths = split_images(args.train)
    calib = calibration_inputs([str(c) for c in calib_paths], 4, QuantConfig(), mult)
    pairs = validation_pairs([str(v) for v in val_paths], 4, VAL_COUNT, VAL_SIDE, mult)
    search = _Search(model, args.target, calib, pairs, args.budget, args.cache, 10**6, None, False)
    ext = suffix(args.target)
    fp32 = args.out / f"{args.model}_fp32_{args.target}{ext}"
    if not fp32.exists():
        export(model, args.target, "fp32", size, fp32)
    rows, artifacts = [], {"fp32": fp32}
    for i, (name, fields) in enumerate(args.configs.items()):
        cfg = QuantConfig(**fields)
        built: dict[str, Any] = {}  # the search's own int8 model where the trial is not cached: one PTQ, not two

        def make(c: QuantConfig) -> Any:
            built["q"] = ptq(model, args.target, calib, c)
            return built["q"]

        t = search.run(name, cfg, make=make)
        path = args.out / f"{args.model}_int8_{i}_{args.target}{ext}"
        export(model, args.target, "int8", size, path, quantized=built["q"] if "q" in built else make(cfg))
        artifacts[name] = path
        rows.append({"config": name, "fields": fields, "validation_drop_db": round(t.drop_db, 4),
                     "validation_drop_se_db": t.drop_se_db, "int8_mac_share": round(t.int8_mac_share, 4)})
        print(json.dumps(rows[-1]), flush=True)
    lat = {Path(r["artifact"]).name: r for r in interleaved_latency(list(artifacts.values()), args.threads,
                                                                     args.rounds, progress=True)}
    f32_ms = lat[fp32.name]["median_ms"]
    host = machine()
    print(f"\n{host}; {args.threads} threads; {args.target} at {size[0]}x{size[1]}, interleaved medians of "
          f"{args.rounds}; fp32 {f32_ms:.0f} ms")
    print("| configuration | validation drop (dB) | int8 MACs | int8 ms | vs fp32 |\n|---|---|---|---|---|")
    for row in rows:
        ms = lat[artifacts[row["config"]].name]["median_ms"]
        row.update(int8_ms=ms, fp32_ms=f32_ms, speedup=f32_ms / ms)
        print(f"| {row['config']} | {row['validation_drop_db']:.3f} | {row['int8_mac_share']:.0%} | {ms:.0f} | "
              f"{f32_ms / ms:.2f}x |")
    (args.out / f"{args.model}_{args.target}.json").write_text(
        json.dumps({"host": host, "threads": args.threads, "size": list(size), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
