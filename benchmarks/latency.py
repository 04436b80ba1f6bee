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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interleaved(paths: list[Path], threads: int, rounds: int) -> list[dict]:
    """edgesr's interleaved timing (``edgesr.export.runtimes.interleaved_latency``), rounds on stderr."""
    from edgesr.export.runtimes import interleaved_latency

    return interleaved_latency(paths, threads, rounds, progress=True)


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
