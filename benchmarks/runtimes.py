"""One table: model × target × precision → Set5/B100 PSNR-Y in the runtime, parity with PyTorch, delegation,
latency at a 320×180 input (2 threads), file size, and fp32 latency against this host's compute limit.

    python benchmarks/runtimes.py [--models safmn scnet_t eimn_a lamnet] [--rows executorch:fp32 ...]
                                  [--data ../shared/data/Set5 ../shared/data/B100] [--out benchmarks/out/runtimes]

Every row is ``edgesr export`` + ``edgesr check`` (the same functions), so numbers here are what a user gets.
Rows are (target, precision) pairs: int8 rows plug in as ``executorch:int8`` etc. once ``edgesr.quantize``
provides the PT2E model (``export(..., quantized=...)``). Results are appended to ``OUT.json`` as rows finish
(a rerun skips rows already there unless --force) and rendered to ``OUT.md``.

Compute limit: MACs of the conv/matmul layers (torch FlopCounterMode ÷ 2) ÷ the host's peak FMA rate, measured
here with a large fp32 matmul on the same threads (and the AVX2/FMA theoretical peak from /proc/cpuinfo for
reference). ``bound_ms / latency`` is the fraction of peak the runtime reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

# Input size H×W per model: 180×320 (a 320×180 frame); SAFMN needs multiples of 8 -> 184×320.
MODELS = {"safmn": (184, 320), "scnet_t": (180, 320), "eimn_a": (180, 320), "lamnet": (180, 320)}
WEIGHTS = {"eimn_a": "zoo"}  # official EIMN-A x4 weights ship in edgesr's zoo; others: zoo when shipped, else random
OUTLIER_RATIO = {"eimn_a": 8.0}  # int8 outlier guard per model (see QuantConfig.outlier_ratio)
# per-model, per-target int8 options (QuantConfig fields) measured in benchmarks/int8_drop.py
TARGET_OPTIONS: dict[tuple[str, str], dict] = {}  # e.g. {("eimn_a", "tflite"): {"island_exits": False}}
# int8 variants, as a row suffix: "executorch:int8/fa" = residual adds and first/last conv left in float.
INT8_VARIANTS = {"": {}, "fa": {"float_adds": True, "keep_float": ["first", "last"]}}
DEFAULT_ROWS = ["executorch:fp32", "executorch:fp16", "tflite:fp32", "onnx:fp32", "coreml:fp32"]
SUFFIX = {"executorch": ".pte", "tflite": ".tflite", "coreml": ".mlpackage", "onnx": ".onnx"}


def peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float | str | None]:
    """Measured fp32 matmul rate (the practical FMA peak) and the SIMD-FMA theoretical peak."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    measured = 2 * n ** 3 / best / 1e9
    mhz, flags = None, ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = max(float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz"))
        flags = next(line for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration, ValueError):
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if "fma" in flags else 1
    theory = (mhz or 0) / 1e3 * threads * fma_units * lanes * 2 or None
    return {"measured_gflops": measured, "theoretical_gflops": theory, "cpu_mhz": mhz,
            "note": f"fp32 {n}x{n} matmul, best of {repeats}, {threads} threads; theory = GHz x threads x "
                    f"{fma_units} FMA units x {lanes} lanes x 2"}


def cpu_isa() -> str:
    """The host line of ``edgesr check`` (CPU and its int8 dot-product instructions): int8 speed-ups depend on it."""
    from edgesr.host import machine as _machine

    return _machine()


def count_macs(name: str, size: tuple[int, int], scale: int = 4) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgesr.reparam import export_friendly
    from edgesr.models import create

    model = export_friendly(create(name, scale))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.rand(1, 3, *size))
    return fc.get_total_flops() / 2


def run_row(name: str, target: str, precision: str, data: list[str], out_dir: Path, threads: int, runs: int,
            compare_images: int) -> dict:
    from edgesr.export.check import check_artifact
    from edgesr.export.exporters import export_by_name
    from edgesr.export.spec import read_sidecar

    size = MODELS[name]
    label, precision, variant = precision, *precision.partition("/")[::2]
    path = out_dir / f"{name}_x4_{size[0]}x{size[1]}_{label.replace('/', '_')}{SUFFIX[target]}"
    weights = weights_for(name)
    t = time.perf_counter()
    quantized = None
    if precision == "int8":  # PTQ for the row's target on T91+BSD200 (16 LR crops), then the int8 export
        from edgesr.models import create
        from edgesr.quantize import QuantConfig, ptq, save_quantized

        cfg = QuantConfig(outlier_ratio=OUTLIER_RATIO.get(name, 0.0), **INT8_VARIANTS[variant],
                          **TARGET_OPTIONS.get((name, target), {}))
        calib = [str(SHARED / "data" / "T91"), str(SHARED / "data" / "BSD200")]
        q = ptq(create(name, 4, weights=weights), target, calib, cfg)
        quantized = str(save_quantized(q, out_dir / f"{name}_x4_{target}_ptq{'_' + variant if variant else ''}.pt"))
    export_by_name(name, 4, target, precision, size, path, weights=weights, command="benchmarks/runtimes.py",
                   quantized=quantized)
    export_s = time.perf_counter() - t
    # Random-init models: PSNR is meaningless, so evaluate only the first folder (parity still counts).
    row_data = data if weights else data[:1]
    t = time.perf_counter()
    report = check_artifact(path, row_data, threads=threads, runs=runs, memory=True, op_profile=False,
                            compare_images=compare_images)
    info = read_sidecar(path)
    return {"model": name, "target": target, "precision": label, "input_size": list(size),
            "weights": weights or "random init", "export_s": round(export_s, 1),
            "check_s": round(time.perf_counter() - t, 1), "status": report["status"],
            "quality": {k: {"psnr_y": v["psnr_y"], "ssim_y": v["ssim_y"], "images": v["images"],
                            "torch_whole_psnr_y": v.get("torch_whole_psnr_y"),
                            "runtime_minus_torch_db": v.get("runtime_minus_torch_db"),
                            "runtime_minus_torch_sd_db": v.get("runtime_minus_torch_sd_db"),
                            "compared_images": v.get("compared_images")}
                        for k, v in (report["quality"] or {}).items()},
            "parity": report["parity"] and {k: report["parity"].get(k) for k in (
                "max_abs_diff", "psnr_vs_torch_db", "windows", "fp64_reference")},
            "tiling": report["tiling"] and report["tiling"]["psnr_tiled_vs_whole_db"],
            "delegation": info.delegation, "graph": report["graph"] and {k: v for k, v in report["graph"].items()
                                                                         if k != "ops"},
            "latency_ms": report["latency_ms"], "memory": report["memory"],
            "file_size_bytes": report["artifact"]["file_size_bytes"], "notes": report["notes"]}


def weights_for(name: str) -> str | None:
    from edgesr.zoo import available

    return WEIGHTS.get(name) or ("zoo" if (name, 4) in available() else None)


def speedups(rows: list[dict]) -> list[str]:
    """int8 over fp32 latency per model and target, both measured in this table's run."""
    lat = {(r["model"], r["target"], r["precision"]): (r.get("latency_ms") or {}).get("median")
           for r in rows if "error" not in r}
    out = []
    for (model, target, prec), ms in lat.items():
        fp = lat.get((model, target, "fp32"))
        if prec.startswith("int8") and ms and fp:
            out.append(f"{model} {target}: {prec} speed-up {fp / ms:.2f}x over fp32 ({fp:.0f} -> {ms:.0f} ms)")
    return out


def render(results: dict) -> str:
    host, peak = results["host"], results["peak"]
    lines = [f"# Runtime table ({host['machine']}; {results['threads']} threads; load avg at start "
             f"{host['loadavg']})", "",
             f"Peak fp32 rate: measured matmul {peak['measured_gflops']:.1f} GFLOP/s"
             + (f", SIMD-FMA theory {peak['theoretical_gflops']:.1f} GFLOP/s" if peak.get("theoretical_gflops")
                else "") + f" ({results['threads']} threads). Bound = MACs ÷ (measured GFLOP/s ÷ 2).", "",
             "| model | target | prec | Set5 PSNR-Y | B100 PSNR-Y | runtime − PyTorch (dB) | parity max\\|Δ\\| | parity PSNR | delegated | "
             "latency med / p90 (ms) | bound (ms) | % of peak | peak RSS (MB) | size (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['target']} | {r['precision']} | error: {r['error']} |" + " |" * 10)
            continue
        q = r["quality"]
        rnd = "" if r["weights"] != "random init" else " (rand)"
        s5 = next((f"{v['psnr_y']:.2f}{rnd}" for k, v in q.items() if k.lower().startswith("set5")), "–")
        b1 = next((f"{v['psnr_y']:.2f}{rnd}" for k, v in q.items() if k.lower().startswith("b100")), "–")
        dq = " / ".join(_fmt(v.get("runtime_minus_torch_db"), "+.4f") for v in q.values()) or "–"
        par = r["parity"] or {}
        deleg = f"{r['delegation']['percent_delegated']:.0f}%" if r["delegation"] else \
            ("builtins" if r["target"] == "tflite" else "–")
        lat = r["latency_ms"] or {}
        macs = results["macs"].get(r["model"])
        bound = macs / (peak["measured_gflops"] / 2 * 1e9) * 1e3 if macs else None
        eff = f"{100 * bound / lat['median']:.0f}%" if bound and lat.get("median") else "–"
        mem = (r["memory"] or {}).get("peak_rss_mb", "–")
        status = "" if r["status"] == "ran" else f" ({r['status']})"
        lines.append(
            f"| {r['model']} | {r['target']}{status} | {r['precision']} | {s5} | {b1} | {dq} | "
            f"{_fmt(par.get('max_abs_diff'), '.1e')} | {_fmt(par.get('psnr_vs_torch_db'), '.1f')} | {deleg} | "
            f"{_fmt(lat.get('median'), '.0f')} / {_fmt(lat.get('p90'), '.0f')} | {_fmt(bound, '.0f')} | {eff} | "
            f"{mem} | {r['file_size_bytes'] / 1e6:.2f} |")
    floors = [f"{r['model']} {r['target']}: runtime {f['runtime_max_abs']:.1e}, PyTorch fp32 {f['torch_fp32_max_abs']:.1e}"
              for r in results["rows"] if "error" not in r
              for f in [((r.get("parity") or {}).get("fp64_reference") or {})] if "runtime_max_abs" in f]
    if floors:
        lines += ["", "fp32 vs float64 PyTorch, max |Δ| on one window (runtime vs PyTorch fp32: rounding or a "
                  "less accurate kernel?): " + "; ".join(floors)]
    ups = speedups(results["rows"])
    if ups:
        lines += ["", "Speed-up (median latency, same run): " + "; ".join(ups)]
    lines += ["", "MACs (conv/matmul, x4): " + ", ".join(f"{k} {v / 1e9:.1f} G @ {MODELS[k][0]}x{MODELS[k][1]}"
                                                       for k, v in results["macs"].items()),
              "runtime − PyTorch: PSNR-Y of the artifact minus that of the PyTorch model it came from (fp32, or "
              "the fake-quant int8 model) through the same windows, per dataset: the runtime's own effect.",
              "(rand) = seeded random weights: PSNR is not meaningful, parity is. Core ML on Linux: converted, "
              "not run (no number is simulated)."]
    return "\n".join(lines) + "\n"


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="target:precision pairs")
    p.add_argument("--data", nargs="+", default=[str(SHARED / "data" / "Set5"), str(SHARED / "data" / "B100")])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "runtimes"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--compare-images", type=int, default=5, help="images per folder compared with PyTorch")
    p.add_argument("--force", action="store_true", help="recompute rows already in OUT.json")
    p.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="artifact input size for every model of this run (default: a 320x180 frame); e.g. 120 120 "
                        "holds a B100 LR image (120x80 or 80x120) in one window at a quarter of the cost")
    args = p.parse_args(argv)
    if args.input_size:
        for name in args.models:
            MODELS[name] = (args.input_size[0], args.input_size[1])

    out = Path(args.out)
    art_dir = out.parent / "artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    res_path = out.with_suffix(".json")
    results = json.loads(res_path.read_text()) if res_path.exists() and not args.force else {"rows": []}
    results["threads"] = args.threads
    results["host"] = {"machine": cpu_isa(),
                       "loadavg": " ".join(f"{v:.1f}" for v in os.getloadavg())}
    if "peak" not in results:
        results["peak"] = peak_gflops(args.threads)
    results.setdefault("macs", {})
    for name in args.models:
        if name not in results["macs"]:
            results["macs"][name] = count_macs(name, MODELS[name])
    done = {(r["model"], r["target"], r["precision"]) for r in results["rows"] if "error" not in r}
    for name in args.models:
        for row in args.rows:
            target, precision = row.split(":")
            if (name, target, precision) in done:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} {target} {precision} ...", flush=True)
            try:
                r = run_row(name, target, precision, args.data, art_dir, args.threads, args.runs,
                            args.compare_images)
            except Exception as exc:  # noqa: BLE001 - a failing row is a result, keep going
                traceback.print_exc()
                r = {"model": name, "target": target, "precision": precision,
                     "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"}
            results["rows"] = [x for x in results["rows"]
                               if (x["model"], x["target"], x["precision"]) != (name, target, precision)] + [r]
            res_path.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
            out.with_suffix(".md").write_text(render(results))
            print(render(results).splitlines()[-4], flush=True)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
