#!/usr/bin/env python
"""Latency of exported artifacts, timed interleaved in one process so their ratios come from one run.

    python benchmarks/latency.py benchmarks/out/runtimes_lamnet/*.pte benchmarks/out/runtimes_lamnet/*.tflite \
        [--threads 2] [--rounds 7] [--json OUT]

Each round runs every artifact once on the same random input at its own input size (round-robin, after one
warm-up call each), so a background load that comes and goes hits all of them alike; the table gives the median
and p90 over rounds and, per (model, target), each int8 artifact's speed-up over the fp32 one.
``edgesr check`` measures one artifact at a time; use this when the ratio is the number you need.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interleaved(paths: list[Path], threads: int, rounds: int) -> list[dict]:
    """Median / p90 latency of each artifact, measured in rounds that run every artifact once (so a busy host
    slows all of them alike), with the int8 speed-up over the fp32 artifact of the same model and target."""
    import numpy as np

    from edgesr.export.runtimes import load_runner
    from edgesr.export.spec import read_sidecar

    runners = []
    for path in paths:
        info = read_sidecar(path)
        run = load_runner(path, info, threads)
        x = np.random.default_rng(0).random((1, 3, *info.input_size), dtype=np.float32)
        run(x)  # warm-up: first-call allocation and packing
        runners.append((Path(path), info, run, x))
    times: dict[Path, list[float]] = {path: [] for path, *_ in runners}
    for r in range(rounds):
        for path, _, run, x in runners:
            t = time.perf_counter()
            run(x)
            times[path].append((time.perf_counter() - t) * 1e3)
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    rows = []
    for path, info, _, _ in runners:
        ts = sorted(times[path])
        rows.append({"artifact": path.name, "model": info.model, "target": info.target,
                     "precision": info.precision, "input_size": list(info.input_size),
                     "median_ms": statistics.median(ts), "p90_ms": ts[min(len(ts) - 1, int(0.9 * len(ts)))]})
    for row in rows:
        fp = next((o["median_ms"] for o in rows if (o["model"], o["target"], o["precision"], o["input_size"])
                   == (row["model"], row["target"], "fp32", row["input_size"])), None)
        row["speedup_vs_fp32"] = fp / row["median_ms"] if fp and row["precision"] != "fp32" else None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", type=Path, help=".pte / .tflite / .onnx files exported by edgesr")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from edgesr.export.spec import ExportError

    try:
        rows = interleaved(args.artifacts, args.threads, args.rounds)
    except (ExportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"| artifact | model | target | prec | input | median (ms) | p90 (ms) | speed-up vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        up = f"{row['speedup_vs_fp32']:.2f}x" if row["speedup_vs_fp32"] else "–"
        print(f"| {row['artifact']} | {row['model']} | {row['target']} | {row['precision']} | "
              f"{row['input_size'][0]}x{row['input_size'][1]} | {row['median_ms']:.0f} | {row['p90_ms']:.0f} | {up} |")
    from runtimes import cpu_isa  # benchmarks/ is this script's folder

    isa = cpu_isa()
    print(f"\n{args.threads} threads, {args.rounds} interleaved rounds, {isa}, load average at end "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "host": isa, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
