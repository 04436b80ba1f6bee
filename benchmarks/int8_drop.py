"""fp32 vs int8 (PTQ and QAT, fake-quant in PyTorch) per model and target runtime, on Set5/Set14/B100.

int8 models evaluate whole images through the dynamic-shape graph, padded (edge replication) to the model's
size multiple (8 for SAFMN); the fp32 row is evaluated through the same padding so the drop is quantization
only. Calibration: 16 images spread over T91+BSD200 (LR centre crops 96 px); QAT on T91+BSD200 patches with
L1 to HR + L1 to the fp32 model's SR. Core ML rows are the ExecuTorch rows of the same run (Core ML's W8A8 is
annotated with XNNPACK's annotator; a test checks the two fake-quant models agree bit for bit). ``--merge``
prints one markdown table from several runs' JSON files; ``--fp32-cache`` shares the fp32 side between runs.

    .venv/bin/python benchmarks/int8_drop.py --models eimn_a --targets executorch --modes ptq --sets Set5
    .venv/bin/python benchmarks/int8_drop.py                        # everything (hours on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from edgesr.data.folders import open_benchmark
from edgesr.evaluate import evaluate
from edgesr.models import create
from edgesr.quantize import QuantConfig, ptq, qat, save_quantized
from edgesr.quantize.graph import pad_to_multiple, size_multiple
from edgesr.zoo import available

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


class Padded(nn.Module):
    """The fp32 model seen through the int8 model's padding (same borders, so the drop is quantization only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.mult = model, size_multiple(model)
        self.min_size, self.scale = int(getattr(model, "min_size", 1)), int(model.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.mult, self.min_size)
        return self.model(xp).clamp(0, 1)[..., : h * self.scale, : w * self.scale]


def _fp32_results(model: nn.Module, key: str, sets: dict, cache: Path | None) -> dict[str, SimpleNamespace]:
    """fp32 PSNR/SSIM-Y per set, read from / added to ``cache`` (keyed by model:weights:set)."""
    known = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    out = {}
    for s, b in sets.items():
        k = f"{key}:{s}"
        if k not in known:
            r = evaluate(Padded(model), b, 4, progress=False)
            known[k] = {"psnr_y": r.psnr_y, "ssim_y": r.ssim_y}
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                tmp.write_text(json.dumps(known, indent=2))
                tmp.replace(cache)
        out[s] = SimpleNamespace(**known[k])
    return out


def _options(args: argparse.Namespace) -> str:
    """The SR options of a row, as the command line spells them."""
    opts = (["--float-adds"] if args.float_adds else []) + (
        ["--keep-float " + " ".join(args.keep_float)] if args.keep_float else []) + (
        [f"--outlier-ratio {args.outlier_ratio:g}"] if args.outlier_ratio else []) + (
        [f"--observer {args.observer}"] if args.observer != "histogram" else []) + (
        ["--no-island-exits"] if args.no_island_exits else [])
    return " ".join(opts) or "defaults"


def merged_table(files: list[Path], sets: list[str]) -> str:
    """One markdown table (fp32 row per model, then int8 (drop) per target/mode/options) from several runs."""
    rows = [r for f in files for r in json.loads(Path(f).read_text())]
    sets = [s for s in sets if any(s in r for r in rows)]
    lines = ["| model | target | mode | options | " + " | ".join(sets) + " |", "|---" * (4 + len(sets)) + "|"]
    seen: set[str] = set()
    for r in sorted(rows, key=lambda r: (r["model"], r["target"], r["mode"])):
        if r["model"] not in seen:
            seen.add(r["model"])
            fp = {s: next((x[s]["fp32"] for x in rows if x["model"] == r["model"] and s in x), None) for s in sets}
            lines.append(f"| {r['model']} | – | fp32 | – | " + " | ".join(
                f"{v:.3f}" if v is not None else "–" for v in fp.values()) + " |")
        qat = r.get("qat")
        mode = f"QAT {qat['iterations']} it, lr {qat['lr']:g}" if qat else r["mode"].upper()
        lines.append(f"| {r['model']} | {r['target']} | {mode} | {r.get('options', '?')} | " + " | ".join(
            f"{r[s]['int8']:.3f} ({-r[s]['drop']:+.3f})" if s in r else "–" for s in sets) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["safmn", "scnet_t", "eimn_a", "lamnet"])
    ap.add_argument("--targets", nargs="+", default=["executorch", "tflite", "coreml"])
    ap.add_argument("--modes", nargs="+", default=["ptq", "qat"], choices=["ptq", "qat"])
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    ap.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH", help="fp32 weights (default: zoo)")
    ap.add_argument("--qat-iterations", type=int, default=300)
    ap.add_argument("--qat-lr", type=float, default=QuantConfig.lr)
    ap.add_argument("--keep-float", nargs="*", default=[])
    ap.add_argument("--observer", default="histogram")
    ap.add_argument("--float-adds", action="store_true", help="leave residual adds in float (QuantConfig.float_adds)")
    ap.add_argument("--outlier-ratio", type=float, default=0.0, help="outlier guard (0: off; see QuantConfig)")
    ap.add_argument("--no-island-exits", action="store_true", help="tflite: QuantConfig.island_exits=False")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "int8")
    ap.add_argument("--fp32-cache", type=Path, default=None,
                    help="JSON file of fp32 results shared by several runs (the fp32 side is evaluated once)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                    help="print one markdown table from earlier runs' int8_drop.json files (runs nothing)")
    args = ap.parse_args()
    if args.merge:
        print(merged_table(args.merge, args.sets))
        return 0
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = dict(w.split("=", 1) for w in args.weights)
    train = [str(DATA / "T91"), str(DATA / "BSD200")]
    sets = {s: open_benchmark(DATA / s, 4) for s in args.sets}
    cfg = QuantConfig(iterations=args.qat_iterations, lr=args.qat_lr, keep_float=list(args.keep_float), observer=args.observer, float_adds=args.float_adds,
                      outlier_ratio=args.outlier_ratio, island_exits=not args.no_island_exits)
    rows = []
    for name in args.models:
        w = weights.get(name) or ("zoo" if (name, 4) in available() else None)
        if w is None:
            print(f"{name}: no fp32 weights (zoo has none; pass --weights {name}=PATH) — skipped", flush=True)
            continue
        model = create(name, 4, weights=w)
        fp = _fp32_results(model, f"{name}:{w}", sets, args.fp32_cache)
        print(f"{name} fp32 " + "  ".join(f"{s} {r.psnr_y:.3f}" for s, r in fp.items()), flush=True)
        for target in args.targets:
            for mode in args.modes:
                twin = next((r for r in rows if target == "coreml" and r["model"] == name and r["mode"] == mode
                             and r["target"] == "executorch"), None)
                if twin is not None:  # Core ML's W8A8 is annotated with XNNPACK's annotator: the same model
                    rows.append({**twin, "target": "coreml", "same_as": "executorch"})
                    print(f"{name:<8} {'coreml':<11} {mode:<4} = executorch (same W8A8 annotator, "
                          "tests/test_quantize.py::test_coreml_fake_quant_is_the_executorch_one)", flush=True)
                    continue
                t0 = time.perf_counter()
                q = ptq(model, target, train, cfg) if mode == "ptq" else qat(model, target, train, cfg)
                minutes = (time.perf_counter() - t0) / 60
                save_quantized(q, args.out / f"{name}_x4_{target}_{mode}.pt")
                res = {s: evaluate(q, b, 4, progress=False) for s, b in sets.items()}
                row = {"model": name, "target": target, "mode": mode, "minutes": round(minutes, 1),
                       "options": _options(args),
                       **({"qat": {"iterations": args.qat_iterations, "lr": args.qat_lr}} if mode == "qat" else {}),
                       **{s: {"fp32": fp[s].psnr_y, "int8": r.psnr_y, "drop": fp[s].psnr_y - r.psnr_y,
                              "ssim_fp32": fp[s].ssim_y, "ssim_int8": r.ssim_y} for s, r in res.items()}}
                rows.append(row)
                kept = len(q.config.get("keep_nodes") or [])
                row["kept_float_nodes"] = kept
                print(f"{name:<8} {target:<11} {mode:<4} " + "  ".join(
                    f"{s} {r.psnr_y:.3f} ({-row[s]['drop']:+.3f})" for s, r in res.items())
                    + f"  [{minutes:.1f} min]" + (f" ({kept} ops kept float)" if kept else ""), flush=True)
                (args.out / "int8_drop.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'model':<8} {'target':<11} {'mode':<4} " + " ".join(f"{s + ' fp32':>11} {'int8':>7} {'drop':>6}"
                                                          for s in args.sets))
    for r in rows:
        print(f"{r['model']:<8} {r['target']:<11} {r['mode']:<4} " + " ".join(
            f"{r[s]['fp32']:11.3f} {r[s]['int8']:7.3f} {r[s]['drop']:6.3f}" for s in args.sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
