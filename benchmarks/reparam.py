"""What ``deploy`` does to each model: parameters, MACs and host latency of the eval vs the deploy form.

For every model (x4, 1×3×180×320 LR input; SAFMN 1×3×184×320 because its exact max_pool2d path needs H, W
multiples of 8 — at 180 the adaptive pool has no ExecuTorch lowering): trainable parameters, all weights,
MACs of the conv/linear modules (counted with forward hooks; functional convs such as EIMN's split
``spatial_expand`` and SAFMN's ones-kernel upsample are not counted), eager torch latency and ExecuTorch
fp32 latency (torch.export → XNNPACK → .pte, run with the ExecuTorch runtime), both with 2 threads. Each form
is lowered as ``edgesr export`` ships it (with the export rewrites: channel means as convs, shift as a
depthwise conv ...); ``--raw-pte`` lowers the forms as they are, which shows what ``deploy`` alone does.
Forms of one model are timed interleaved (eval, deploy, eval, ...) and the median is kept, so the
ratios come from one run on one machine state. Models with Shift8 (SCNet) also get every shift form.

    .venv/bin/python benchmarks/reparam.py                       # all four models (~15 min on 2 cores)
    .venv/bin/python benchmarks/reparam.py --models scnet_t --runs 3 --no-pte
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgesr.reparam import export_friendly
from edgesr.models import create, num_params
from edgesr.models.scnet import Shift8
from edgesr.reparam import DEFAULT_SHIFT, deploy

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"safmn": (184, 320), "scnet_t": (180, 320), "eimn_a": (180, 320), "lamnet": (180, 320)}


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d / ConvTranspose2d / Linear module for input ``x``."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.ConvTranspose2d):
            kh, kw = m.kernel_size
            total += inputs[0].numel() * (m.out_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def lower_to_pte(model: nn.Module, x: torch.Tensor) -> tuple[bytes, int]:
    """fp32 .pte bytes with the XNNPACK delegate, and the number of ops left outside the delegate."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(model, (x,))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    return edge.to_executorch().buffer, info.num_non_delegated_nodes


def pte_runner(buf: bytes, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(buf)   # must outlive the method (it owns the method's memory)
    method = program.load_method("forward")
    return lambda: (program, method.execute([x]))[1][0]


def interleaved_median(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds per function, one warm-up each, runs interleaved across functions."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def forms(name: str) -> dict[str, nn.Module]:
    """eval form (the registry model) and deploy form(s) of ``name`` x4."""
    model = create(name, 4)
    out = {"eval": model}
    if any(isinstance(m, Shift8) for m in model.modules()):
        for mode in ("slice", "depthwise", "dense"):
            tag = "deploy" if mode == DEFAULT_SHIFT else f"deploy[{mode}]"
            out[tag] = deploy(copy.deepcopy(model), shift=mode)
    else:
        out["deploy"] = deploy(copy.deepcopy(model))
    return out


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    h, w = SIZES[name]
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    models = forms(name)
    rows = {tag: {"model": name, "form": tag, "input": f"1x3x{h}x{w}", "params": num_params(m),
                  "weights": sum(p.numel() for p in m.parameters()), "macs": count_macs(m, x)}
            for tag, m in models.items()}
    with torch.no_grad():
        ref = models["eval"](x)
        for tag, m in models.items():
            rows[tag]["max_abs_vs_eval"] = float((m(x) - ref).abs().max())
        eager = interleaved_median({tag: (lambda m=m: m(x)) for tag, m in models.items()}, args.runs)
    for tag, ms in eager.items():
        rows[tag]["eager_ms"] = ms
    if args.pte:
        runners = {}
        for tag, m in models.items():
            t0 = time.perf_counter()
            try:
                buf, outside = lower_to_pte(m if args.raw_pte else export_friendly(m), x)
                run = pte_runner(buf, x)
                err = float((run() - ref).abs().max())
            except Exception as exc:  # noqa: BLE001 - report why and continue with the next form
                rows[tag]["pte_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if os.environ.get("EDGESR_DEBUG") == "1":
                    traceback.print_exc()
                continue
            rows[tag].update(pte_bytes=len(buf), non_delegated_ops=outside, pte_max_abs_vs_eval=err,
                             lower_s=time.perf_counter() - t0)
            runners[tag] = run
        for tag, ms in interleaved_median(runners, args.runs).items():
            rows[tag]["pte_ms"] = ms
    base = rows["eval"]
    for r in rows.values():
        for key in ("eager_ms", "pte_ms"):
            if key in r and key in base:
                r[key.replace("_ms", "_ratio")] = r[key] / base[key]
    return list(rows.values())


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<8} {'form':<18} {'params':>9} {'weights':>9} {'GMACs':>7} {'eager ms':>9} {'ratio':>6} "
            f"{'pte ms':>9} {'ratio':>6} {'non-XNN ops':>11} {'max|Δ| eager':>12} {'max|Δ| pte':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        pte = (f"{r['pte_ms']:9.1f} {r['pte_ratio']:6.3f} {r['non_delegated_ops']:>11}"
               if "pte_ms" in r and "pte_ratio" in r else f"{'-':>9} {'-':>6} {'-':>11}")
        print(f"{r['model']:<8} {r['form']:<18} {r['params']:>9,} {r['weights']:>9,} {r['macs'] / 1e9:7.2f} "
              f"{r['eager_ms']:9.1f} {r['eager_ratio']:6.3f} {pte} {r['max_abs_vs_eval']:12.1e} "
              f"{r.get('pte_max_abs_vs_eval', float('nan')):10.1e}")
        if "pte_error" in r:
            print(f"{'':<8} {'':<18} .pte failed: {r['pte_error']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--runs", type=int, default=5, help="timed runs per form (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-pte", dest="pte", action="store_false", help="skip the ExecuTorch export")
    ap.add_argument("--raw-pte", action="store_true",
                    help="lower each form as it is, without edgesr's export rewrites (default: as `edgesr export` "
                         "ships it; LAMNet's raw graph takes tens of minutes to partition)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "reparam.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.pte:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(args.threads)
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"torch {torch.__version__}; median of {args.runs} interleaved runs; random-init x4 models; "
          f"shift default: {DEFAULT_SHIFT}", flush=True)
    rows: list[dict] = []
    for name in args.models:
        t0 = time.perf_counter()
        try:
            rows += bench_model(name, args)
        except Exception as exc:  # noqa: BLE001
            print(f"{name}: failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"[{name} done in {time.perf_counter() - t0:.0f} s]", flush=True)
        print_table([r for r in rows if r["model"] == name])
        print(flush=True)
    print("all models:")
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
