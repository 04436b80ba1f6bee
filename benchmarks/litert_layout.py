"""What LiteRT makes of an int8 graph: op count, layout transposes, XNNPACK subgraphs, speed against fp32.

Per configuration, the int8 ``.tflite`` is exported twice: as edgesr captures it (3-D per-channel operands viewed
as 4-D, ``edgesr.quantize.graph.channel_operands_4d``) and with the 3-D operands kept, as research code writes
them; all artifacts are timed interleaved with the fp32 one in one run. Calibration: ``--calib-size`` crops of the
``--train`` images ``--auto`` calibrates on (every 5th image is held out for validation and not used here).

    python benchmarks/litert_layout.py --model eimn_a --train T91 BSD200 --size 180x320 --rounds 15 \\
        --configs '{"guard 4": {"observer": "percentile", "percentile": 99.999, "keep_float": ["first", "last"],
                    "float_adds": true, "outlier_ratio": 4.0}}'
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default="zoo")
    p.add_argument("--train", nargs="+", required=True, type=Path, help="calibration HR folders")
    p.add_argument("--configs", required=True, type=json.loads, metavar="JSON",
                   help='{"name": {QuantConfig fields}, ...}')
    p.add_argument("--calib-size", type=int, default=8)
    p.add_argument("--size", default="180x320", help="artifact LR size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", type=Path, default=HERE / "out" / "litert_layout")
    args = p.parse_args(argv)

    import torch
    from ai_edge_litert.interpreter import Interpreter

    import edgesr.quantize.graph as graph
    from edgesr.export import export
    from edgesr.export.runtimes import interleaved_latency, litert_delegation
    from edgesr.host import machine
    from edgesr.models import create, size_multiple
    from edgesr.quantize import QuantConfig
    from edgesr.quantize.auto import split_images
    from edgesr.quantize.ptq import calibration_inputs, ptq

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = create(args.model, 4, weights=args.weights).eval()
    mult = size_multiple(model)
    size = (h // mult * mult, w // mult * mult)
    calib_paths, _ = split_images(args.train)
    calib = calibration_inputs([str(c) for c in calib_paths], 4, QuantConfig(calib_size=args.calib_size), mult)
    fp32 = args.out / f"{args.model}_fp32.tflite"
    export(model, "tflite", "fp32", size, fp32)
    artifacts = {"fp32": fp32}
    view_4d = graph.channel_operands_4d
    try:
        for i, (name, fields) in enumerate(args.configs.items()):
            for kept in (False, True):
                graph.channel_operands_4d = (lambda gm: 0) if kept else view_4d
                path = args.out / f"{args.model}_int8_{i}{'_3d' if kept else ''}.tflite"
                q = ptq(model, "tflite", calib, QuantConfig(**{"calib_size": args.calib_size, **fields}))
                export(model, "tflite", "int8", size, path, quantized=q)
                artifacts[f"{name}{', 3-D operands kept' if kept else ''}"] = path
    finally:
        graph.channel_operands_4d = view_4d
    lat = dict(zip(artifacts, interleaved_latency(list(artifacts.values()), args.threads, args.rounds,
                                                  progress=True)))
    f32_ms = lat["fp32"]["median_ms"]
    print(f"\n{machine()}; {args.threads} threads; {args.model} x4 LiteRT at {size[0]}x{size[1]}, interleaved "
          f"medians of {args.rounds}")
    print("| artifact | ops | TRANSPOSE | XNNPACK subgraphs | not delegated | ms | vs fp32 |\n|---|---|---|---|---|---|---|")
    rows = []
    for name, path in artifacts.items():
        ops = collections.Counter(o["op_name"] for o in Interpreter(model_path=str(path))._get_ops_details())
        d = litert_delegation(path)
        ms = lat[name]["median_ms"]
        nd = ", ".join(f"{k} ×{v}" for k, v in d["not_delegated"].items()) or "–"
        rows.append({"artifact": name, "ops": sum(ops.values()), "transposes": ops["TRANSPOSE"],
                     "subgraphs": d["delegated_subgraphs"], "not_delegated": d["not_delegated"], "median_ms": ms,
                     "p90_ms": lat[name]["p90_ms"], "speedup": f32_ms / ms})
        print(f"| {name} | {sum(ops.values())} | {ops['TRANSPOSE']} | {d['delegated_subgraphs']} | {nd} | {ms:.0f} | "
              f"{f32_ms / ms:.2f}x |")
    (args.out / f"{args.model}.json").write_text(json.dumps({"host": machine(), "size": list(size), "rows": rows},
                                                            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
