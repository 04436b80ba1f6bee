"""int8 found by ``edgesr quantize --auto`` per model x target: the chosen configuration, its drop on the
evaluation sets (fake-quant, whole images; never used by the search), the int8 share of MACs, and fp32 / int8
latency of the exported artifacts measured in the runtime, interleaved in one run. Calibration and validation
images come from the training folders (every 5th image held out for validation).

    python benchmarks/auto_int8.py --models safmn_ntire --targets executorch tflite \\
        --train path/to/T91 path/to/BSD200 --eval path/to/Set5 path/to/Set14 path/to/B100 --budget 0.03

Core ML rows are the fake-quant model (its annotator is the ExecuTorch one); no Core ML runtime on Linux.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["safmn_ntire"])
    p.add_argument("--targets", nargs="+", default=["executorch", "tflite", "coreml"])
    p.add_argument("--train", nargs="+", required=True, type=Path, help="calibration + validation HR folders")
    p.add_argument("--eval", nargs="+", required=True, type=Path, help="evaluation HR folders (reporting only)")
    p.add_argument("--budget", type=float, default=0.03, help="validation PSNR-Y drop budget (dB)")
    p.add_argument("--max-trials", type=int, default=16)
    p.add_argument("--size", default="180x320", help="artifact LR size (SAFMN family: 176x320)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "out" / "auto_int8")
    args = p.parse_args(argv)

    import torch

    from edgesr.data.folders import open_benchmark
    from edgesr.evaluate import evaluate
    from edgesr.export import export
    from edgesr.host import machine
    from edgesr.models import create, size_multiple
    from edgesr.quantize import QuantConfig
    from edgesr.quantize.auto import auto_quantize, recipe_yaml, split_images
    from edgesr.targets import suffix
    from latency import interleaved

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    calib, val = split_images(args.train)
    h, w = (int(v) for v in args.size.lower().split("x"))
    rows = []
    for name in args.models:
        model = create(name, 4, weights="zoo")
        mult = size_multiple(model)
        size = (h // mult * mult, w // mult * mult)
        benches = [open_benchmark(f, 4) for f in args.eval]
        fp32 = {b.name: evaluate(model, b, 4, progress=False).psnr_y for b in benches}
        paths = []
        fp32_path = args.out / f"{name}_fp32"
        for target in args.targets:
            t0 = time.perf_counter()
            res = auto_quantize(model, target, [str(p) for p in calib], [str(p) for p in val], args.budget,
                                config=QuantConfig(), max_trials=args.max_trials,
                                cache_dir=args.out / f"{name}_{target}", progress=True)
            search_s = time.perf_counter() - t0
            drops = {b.name: fp32[b.name] - evaluate(res.model, b, 4, progress=False).psnr_y for b in benches}
            row = {"model": name, "target": target, "chosen": res.chosen.name, "config": res.chosen.config,
                   "recipe": recipe_yaml(target, res), "validation_drop_db": res.chosen.drop_db,
                   "within_budget_on_validation": res.within_budget, "drop_db": drops,
                   "int8_mac_share": res.chosen.int8_mac_share, "trials": len(res.trials),
                   "search_seconds": round(search_s, 1), "fp32_psnr_y": fp32, "size": list(size)}
            if target != "coreml":
                f32 = Path(f"{fp32_path}_{target}{suffix(target)}")
                if not f32.exists():
                    export(model, target, "fp32", size, f32)
                i8 = args.out / f"{name}_int8_{target}{suffix(target)}"
                export(model, target, "int8", size, i8, quantized=res.model)
                paths += [f32, i8]
                row["artifacts"] = [f32.name, i8.name]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
        lat = interleaved(paths, args.threads, args.rounds) if paths else []
        for row in rows:
            for l in lat:
                if row["model"] == name and l["artifact"] in row.get("artifacts", []):
                    row[f"{l['precision']}_ms"] = l["median_ms"]
            if row.get("fp32_ms") and row.get("int8_ms"):
                row["speedup"] = row["fp32_ms"] / row["int8_ms"]
    host = machine()
    (args.out / "auto_int8.json").write_text(json.dumps({"host": host, "threads": args.threads, "rows": rows},
                                                        indent=2))
    print(f"\n{host}; {args.threads} threads; budget {args.budget:g} dB on validation; latency: interleaved medians "
          f"of {args.rounds}")
    sets = [b.name for b in benches]
    print("| model | target | chosen | " + " | ".join(f"{s} drop" for s in sets)
          + " | int8 MACs | fp32 / int8 ms | speed-up |")
    print("|---|---|---|" + "---|" * len(sets) + "---|---|---|")
    for r in rows:
        ms = f"{r['fp32_ms']:.0f} / {r['int8_ms']:.0f}" if r.get("int8_ms") else "converted, not run"
        up = f"{r['speedup']:.2f}x" if r.get("speedup") else "–"
        print(f"| {r['model']} | {r['target']} | {r['chosen']} | "
              + " | ".join(f"{-r['drop_db'][s]:+.3f}" for s in sets)
              + f" | {r['int8_mac_share']:.0%} | {ms} | {up} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
