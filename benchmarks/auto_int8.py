"""int8 found by ``edgesr quantize --auto`` per model x target, beside what a user would otherwise pick.

Per model (zoo weights, x4) and target: the chosen configuration (finalists timed in the runtime inside the
search), its drop on the evaluation sets (fake-quant, whole images, against fp32 on the same input: images
edge-padded to the int8 graph's size multiple; ``drop_vs_whole_db`` adds what that padding costs fp32; never
seen by the search), the int8 share of MACs; then, in the runtimes themselves, on the evaluation sets named by
``--runtime-eval`` (tiled at the artifact's size): fp32, edgesr int8, LiteRT int16x8 (ai-edge-quantizer, edgesr's export), and the two baselines a
user would reach for — onnxruntime ``quantize_static`` (QDQ, per-channel, on edgesr's fp32 ONNX) and
ai-edge-quantizer's default static int8 recipe on edgesr's fp32 ``.tflite`` — all calibrated on the same training
images. Latency: every artifact of the model interleaved in one run. Calibration and validation images come from
``--train`` (every 5th image held out for validation).

    python benchmarks/auto_int8.py --models safmn_ntire eimn_a --train T91 BSD200 \\
        --eval Set5 Set14 B100 --runtime-eval Set5 --budget 0.03 --size 176x320

Core ML rows are the fake-quant model (no Core ML runtime on Linux).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def runtime_psnr(path: Path, benches: list[Any], threads: int) -> dict[str, list[float]]:
    """Per-image PSNR-Y of an artifact run in its runtime over whole images (tiled at its input size)."""
    import torch

    from edgesr.data.io import to_tensor, to_uint8
    from edgesr.export.check import default_overlap, run_tiled
    from edgesr.export.runtimes import load_runner
    from edgesr.export.spec import read_sidecar
    from edgesr.metrics import psnr_y

    info = read_sidecar(path)
    run = load_runner(path, info, threads)
    out = {}
    for b in benches:
        vals = []
        for pair in b.pairs:
            hr, lr = pair.load_hr(), pair.load_lr()
            sr, _, _ = run_tiled(run, to_tensor(lr).numpy(), info.scale, tuple(info.input_size),
                                 default_overlap(min(info.input_size)))
            vals.append(psnr_y(to_uint8(torch.from_numpy(sr)), hr, info.scale))
        out[b.name] = vals
    return out


def int8_drops(fp32_model: Any, qmodel: Any, benches: list[Any], fp32: dict[str, float]
               ) -> tuple[dict[str, float], dict[str, float], dict[str, float | None]]:
    """Fake-quant drops per set: against fp32 on the same (edge-padded) input, the int8 drop; against fp32 on
    whole images, which adds what padding to the graph's size multiple costs fp32 itself; and the first one's
    standard error over the set's images."""
    from edgesr.evaluate import evaluate
    from edgesr.metrics import paired_drop_se

    same, whole, se = {}, {}, {}
    for b in benches:
        q = evaluate(qmodel, b, 4, progress=False)
        ref = evaluate(qmodel.same_input(fp32_model), b, 4, progress=False)
        same[b.name], whole[b.name] = ref.psnr_y - q.psnr_y, fp32[b.name] - q.psnr_y
        names = list(q.per_image)
        se[b.name] = paired_drop_se([ref.per_image[k]["psnr_y"] for k in names],
                                    [q.per_image[k]["psnr_y"] for k in names])
    return same, whole, se


def _sidecar_copy(src: Path, dst: Path, precision: str, note: str) -> None:
    """A sidecar for a baseline artifact: the fp32 one's, renamed (the runtimes read size, layout, scale)."""
    data = json.loads(Path(f"{src}.json").read_text())
    data.update(artifact=dst.name, precision=precision, command=note)
    Path(f"{dst}.json").write_text(json.dumps(data, indent=2))


def ort_quantize_static(fp32: Path, out: Path, calib: list[Any]) -> None:
    """onnxruntime's documented static int8 path: QDQ, per-channel weights, int8 activations, MinMax."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: t.numpy()} for t in calib])

        def get_next(self):  # type: ignore[override]
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    _sidecar_copy(fp32, out, "int8", "onnxruntime.quantization.quantize_static(QDQ, per_channel=True)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["safmn_ntire"])
    p.add_argument("--targets", nargs="+", default=["executorch", "tflite", "coreml"])
    p.add_argument("--train", nargs="+", required=True, type=Path, help="calibration + validation HR folders")
    p.add_argument("--eval", nargs="+", required=True, type=Path, help="evaluation HR folders (reporting only)")
    p.add_argument("--runtime-eval", nargs="*", default=None, metavar="NAME",
                   help="evaluation sets (folder names) also scored in the runtimes (default: the first)")
    p.add_argument("--budget", type=float, default=0.03, help="validation PSNR-Y drop budget (dB)")
    p.add_argument("--max-trials", type=int, default=16)
    p.add_argument("--val-count", type=int, default=32, help="validation images (whole, or 128 px LR crops)")
    p.add_argument("--time-limit", type=float, default=None, help="search seconds per target")
    p.add_argument("--finalists", type=int, default=2, help="within-budget configurations timed in the search")
    p.add_argument("--qat", action="store_true",
                   help="let the search end with QAT (distilled from fp32, on the calibration images) when PTQ "
                        "cannot reach the budget")
    p.add_argument("--config", type=json.loads, default=None, metavar="JSON",
                   help="no search: measure this int8 configuration (QuantConfig fields, e.g. a chosen one's "
                        "recipe) calibrated on the same images, in fake-quant and in the runtimes")
    p.add_argument("--no-baselines", action="store_true", help="skip int16x8 and the onnxruntime / AEQ baselines")
    p.add_argument("--size", default="180x320", help="artifact LR size (SAFMN family: 176x320)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "out" / "auto_int8")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from edgesr.config import from_dict
    from edgesr.data.folders import open_benchmark
    from edgesr.errors import EdgesrError, one_line
    from edgesr.evaluate import evaluate
    from edgesr.export import export
    from edgesr.export.exporters import calibration_lr, quantize_tflite
    from edgesr.export.latency import LatencyProbe
    from edgesr.export.runtimes import interleaved_latency
    from edgesr.host import machine
    from edgesr.metrics import paired_drop_se
    from edgesr.models import create, size_multiple
    from edgesr.quantize import QuantConfig, ptq
    from edgesr.quantize.auto import auto_quantize, int8_mac_share, recipe_yaml, split_images
    from edgesr.targets import TABLE, suffix

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    calib, val = split_images(args.train)
    h, w = (int(v) for v in args.size.lower().split("x"))
    benches = [open_benchmark(f, 4) for f in args.eval]
    rt_names = args.runtime_eval if args.runtime_eval is not None else [benches[0].name]
    rt_benches = [b for b in benches if b.name in rt_names]
    rows: list[dict[str, Any]] = []
    runtime_rows: list[dict[str, Any]] = []
    for name in args.models:
        model = create(name, 4, weights="zoo").eval()
        mult = size_multiple(model)
        size = (h // mult * mult, w // mult * mult)
        fp32 = {b.name: evaluate(model, b, 4, progress=False).psnr_y for b in benches}
        artifacts: dict[str, Path] = {}

        def artifact(kind: str, target: str) -> Path:
            return args.out / f"{name}_{kind}_{target}{suffix(target)}"

        for target in args.targets:
            t0 = time.perf_counter()
            probe = (LatencyProbe(model, target, size, threads=args.threads, rounds=args.rounds,
                                  workdir=args.out / f"{name}_{target}_finalists") if target != "coreml" else None)
            if args.config is not None:
                qmodel = ptq(model, target, [str(p) for p in calib], QuantConfig(**args.config))
                drops, whole, se = int8_drops(model, qmodel, benches, fp32)
                row = {"model": name, "target": target, "chosen": "given config", "config": args.config,
                       "drop_db": drops, "drop_se_db": se, "drop_vs_whole_db": whole,
                       "int8_mac_share": int8_mac_share(model, from_dict(QuantConfig, dict(qmodel.config)),
                                                        target=target),  # with the outlier guard's float nodes
                       "fp32_psnr_y": fp32, "size": list(size)}
            else:
                res = auto_quantize(model, target, [str(p) for p in calib], [str(p) for p in val], args.budget,
                                    config=QuantConfig(), max_trials=args.max_trials, time_limit=args.time_limit,
                                    cache_dir=args.out / f"{name}_{TABLE[target].int8_scheme}", latency=probe,
                                    finalists=args.finalists, progress=True,
                                    qat_images=[str(p) for p in calib] if args.qat else None,
                                    val_count=args.val_count)
                qmodel = res.model
                search_s = time.perf_counter() - t0
                for log in ("trials.jsonl", "result.json"):  # the trial cache is shared by targets of one scheme
                    src = args.out / f"{name}_{TABLE[target].int8_scheme}" / log
                    (args.out / f"{name}_{target}_{log}").write_text(src.read_text())
                drops, whole, se = int8_drops(model, qmodel, benches, fp32)
                row = {"model": name, "target": target, "chosen": res.chosen.name, "config": res.chosen.config,
                       "recipe": recipe_yaml(target, res), "validation_drop_db": res.chosen.drop_db,
                       "validation_drop_se_db": res.chosen.drop_se_db,
                       "within_budget_on_validation": res.within_budget, "drop_db": drops, "drop_se_db": se,
                       "drop_vs_whole_db": whole,
                       "int8_mac_share": res.chosen.int8_mac_share, "trials": len(res.trials),
                       "search_latency": res.chosen.latency, "notes": res.notes,
                       "search_seconds": round(search_s, 1), "fp32_psnr_y": fp32, "size": list(size)}
            if target != "coreml":
                f32, i8 = artifact("fp32", target), artifact("int8", target)
                if not f32.exists():
                    export(model, target, "fp32", size, f32)
                export(model, target, "int8", size, i8, quantized=qmodel)
                artifacts[f"{target} fp32"], artifacts[f"{target} int8 (edgesr --auto)"] = f32, i8
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
        if not args.no_baselines:
            cal = calibration_lr(model, [str(p) for p in calib], size, count=16)
            f32 = artifact("fp32", "tflite")
            if not f32.exists():
                export(model, "tflite", "fp32", size, f32)
            artifacts.setdefault("tflite fp32", f32)

            def made(label: str, make: Callable[[], Path]) -> None:
                """One artifact that cannot be made (ai-edge-quantizer's calibration memory) leaves the rest."""
                try:
                    artifacts[label] = make()
                except EdgesrError as e:
                    runtime_rows.append({"model": name, "artifact": label, "error": one_line(e)})
                    print(f"{name}: {label} not made: {one_line(e)}", flush=True)

            def int16x8() -> Path:
                export(model, "tflite", "int16x8", size, artifact("int16x8", "tflite"), calibration=cal)
                return artifact("int16x8", "tflite")

            def aeq_int8() -> Path:
                aeq = artifact("aeq-int8", "tflite")
                quantize_tflite(f32, aeq, cal, activation_bits=8)
                _sidecar_copy(f32, aeq, "int8", "ai_edge_quantizer recipe.static_wi8_ai8() on the fp32 .tflite")
                return aeq

            made("tflite int16x8 (edgesr, ai-edge-quantizer)", int16x8)
            made("tflite int8 (ai-edge-quantizer default)", aeq_int8)
            onnx32 = artifact("fp32", "onnx")
            if not onnx32.exists():
                export(model, "onnx", "fp32", size, onnx32)
            ort8 = artifact("ort-int8", "onnx")
            ort_quantize_static(onnx32, ort8, cal)
            artifacts["onnx fp32"], artifacts["onnx int8 (onnxruntime quantize_static)"] = onnx32, ort8
        lat = {Path(r["artifact"]).name: r for r in interleaved_latency(list(artifacts.values()), args.threads,
                                                                         args.rounds, progress=True)}
        scored = {label: runtime_psnr(path, rt_benches, args.threads) for label, path in artifacts.items()}
        for label, path in artifacts.items():
            per, ref = scored[label], scored[f"{label.split()[0]} fp32"]
            psnr = {k: float(np.mean(v)) for k, v in per.items()}
            rr = {"model": name, "artifact": label, "file": path.name, "median_ms": lat[path.name]["median_ms"],
                  "speedup_vs_fp32": lat[path.name]["speedup_vs_fp32"], "runtime_psnr_y": psnr,
                  "runtime_drop_db": {k: float(np.mean(ref[k]) - psnr[k]) for k in psnr},
                  "runtime_drop_se_db": {k: paired_drop_se(ref[k], per[k]) for k in per}}
            runtime_rows.append(rr)
            print(json.dumps(rr), flush=True)
        for row in rows:
            if row["model"] == name and row["target"] != "coreml":
                r8 = lat[artifact("int8", row["target"]).name]
                row["fp32_ms"] = lat[artifact("fp32", row["target"]).name]["median_ms"]
                row["int8_ms"], row["speedup"] = r8["median_ms"], r8["speedup_vs_fp32"]
    host = machine()
    (args.out / "auto_int8.json").write_text(json.dumps({"host": host, "threads": args.threads, "budget": args.budget,
                                                         "rows": rows, "runtime_rows": runtime_rows}, indent=2))
    print(f"\n{host}; {args.threads} threads; budget {args.budget:g} dB on validation; latency: interleaved medians "
          f"of {args.rounds}; drops vs fp32 on the same padded input ± their standard error over the set's "
          "images (vs fp32 on whole images in brackets)")
    sets = [b.name for b in benches]

    def pm(se: float | None) -> str:
        return f" ± {se:.3f}" if se else ""

    print("| model | target | chosen | " + " | ".join(f"{s} drop" for s in sets)
          + " | int8 MACs | fp32 / int8 ms | speed-up |")
    print("|---|---|---|" + "---|" * len(sets) + "---|---|---|")
    for r in rows:
        ms = f"{r['fp32_ms']:.0f} / {r['int8_ms']:.0f}" if r.get("int8_ms") else "converted, not run"
        up = f"{r['speedup']:.2f}x" if r.get("speedup") else "–"
        print(f"| {r['model']} | {r['target']} | {r['chosen']} | "
              + " | ".join(f"{-r['drop_db'][s]:+.3f}{pm(r['drop_se_db'][s])} ({-r['drop_vs_whole_db'][s]:+.3f})"
                           for s in sets)
              + f" | {r['int8_mac_share']:.0%} | {ms} | {up} |")
    print("\n| model | artifact (in its runtime) | " + " | ".join(f"{s} drop" for s in rt_names)
          + " | median ms | vs fp32 |")
    print("|---|---|" + "---|" * len(rt_names) + "---|---|")
    for r in runtime_rows:
        if r.get("error"):
            print(f"| {r['model']} | {r['artifact']} | not made: {r['error']} |")
            continue
        up = f"{r['speedup_vs_fp32']:.2f}x" if r["speedup_vs_fp32"] else "–"
        print(f"| {r['model']} | {r['artifact']} | "
              + " | ".join(f"{-r['runtime_drop_db'][s]:+.3f}{pm(r['runtime_drop_se_db'][s])}" for s in rt_names)
              + f" | {r['median_ms']:.0f} | {up} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
