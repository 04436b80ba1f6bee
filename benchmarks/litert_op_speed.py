"""Which op makes LiteRT int8 slower than fp32? One op kind at a time, timed in LiteRT (and ExecuTorch beside it).

Each probe is a tiny SR net, 1x1 conv 3->C, the op repeated ``--repeat`` times, 1x1 conv C->12 + pixel shuffle
x2, exported fp32 and int8 (edgesr's PT2E path, percentile observer) and timed interleaved in one run at the
SAFMN benchmark size; the "shell" probe (no op) is the cost of the head and tail. The LiteRT Python interpreter
has no op profiler, so sub-graph timing is how the slow op is found on a host.

    python benchmarks/litert_op_speed.py --size 176x320 --channels 36
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


class Probe(nn.Module):
    size_multiple = min_size = 16  # the pooling probes (SAFM NTIRE pools by 16)

    def __init__(self, op: nn.Module | None, channels: int, repeat: int) -> None:
        super().__init__()
        self.scale = 2
        self.head = nn.Conv2d(3, channels, 1)
        self.ops = nn.ModuleList([op() for _ in range(repeat)] if op is not None else [])
        self.tail = nn.Conv2d(channels, 12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        for op in self.ops:
            y = op(y)
        return F.pixel_shuffle(self.tail(y), 2)


class Mul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class Add(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class PoolUp(nn.Module):
    """SAFM's pyramid level: max pool by 8, nearest back up."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.max_pool2d(x, 8), scale_factor=8, mode="nearest")


class SliceCat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.shape[1] // 4
        return torch.cat([x[:, i * q:(i + 1) * q] for i in range(4)], dim=1)


def probes(c: int) -> dict[str, object]:
    from edgesr.models.safmn import CCM, SAFM

    return {
        "shell (head + tail only)": None,
        "conv 3x3": lambda: nn.Conv2d(c, c, 3, padding=1),
        "conv 1x1": lambda: nn.Conv2d(c, c, 1),
        "depthwise 3x3": lambda: nn.Conv2d(c, c, 3, padding=1, groups=c),
        "GELU": nn.GELU,
        "x * sigmoid(x)": Mul,
        "residual add (1x1 conv + x)": lambda: Add(c),
        "max pool 8 + nearest up": PoolUp,
        "slice + concat": SliceCat,
        "SAFM (SAFMN NTIRE)": lambda: SAFM(c, (1, 4, 8, 16)),
        "CCM (SAFMN)": lambda: CCM(c),
    }


def make_probe(scale: int = 2, op: str = "GELU", channels: int = 36, repeat: int = 4) -> Probe:
    """The probe as an edgesr model spec builds it (``benchmarks/litert_op_speed.py:make_probe``)."""
    return Probe(probes(channels)[op], channels, repeat)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="176x320")
    p.add_argument("--channels", type=int, default=36)
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--targets", nargs="+", default=["tflite", "executorch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=HERE / "out" / "litert_op_speed")
    args = p.parse_args(argv)

    from edgesr.export import export
    from edgesr.export.runtimes import interleaved_latency
    from edgesr.host import machine
    from edgesr.models import ModelSpec, build
    from edgesr.quantize import QuantConfig, ptq
    from edgesr.targets import suffix

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    calib = [torch.rand(1, 3, 64, 64) for _ in range(4)]
    rows = []
    for name in probes(args.channels):
        model = build(ModelSpec(f"{Path(__file__).resolve()}:make_probe", 2,
                                kwargs={"op": name, "channels": args.channels, "repeat": args.repeat})).eval()
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)[:32]
        paths = []
        for target in args.targets:
            q = ptq(model, target, calib, QuantConfig(observer="percentile"))
            for prec in ("fp32", "int8"):
                path = args.out / f"{slug}_{prec}_{target}{suffix(target)}"
                export(model, target, prec, size, path, quantized=q if prec == "int8" else None)
                paths.append(path)
        lat = interleaved_latency(paths, args.threads, args.rounds)
        row = {"probe": name}
        for target in args.targets:
            f32 = next(r for r in lat if r["target"] == target and r["precision"] == "fp32")
            i8 = next(r for r in lat if r["target"] == target and r["precision"] == "int8")
            row[target] = {"fp32_ms": f32["median_ms"], "int8_ms": i8["median_ms"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    shell = rows[0]
    host = machine()
    (args.out / "litert_op_speed.json").write_text(json.dumps({"host": host, "args": vars(args) | {"out": str(args.out)},
                                                              "rows": rows}, indent=2))
    print(f"\n{host}; {args.threads} threads; {args.size} LR, C={args.channels}, op x{args.repeat}; interleaved "
          f"medians of {args.rounds}; 'op' columns subtract the shell")
    head = " | ".join(f"{t} fp32 / int8 ms (op only) | {t} int8/fp32" for t in args.targets)
    print(f"| probe | {head} |\n|---|" + "---|---|" * len(args.targets))
    for r in rows:
        cells = []
        for t in args.targets:
            f, i = r[t]["fp32_ms"], r[t]["int8_ms"]
            of, oi = f - shell[t]["fp32_ms"], i - shell[t]["int8_ms"]
            ratio = f"{oi / of:.2f}x" if r is not shell and of > 0.05 else "–"
            cells.append(f"{f:.1f} / {i:.1f} ({of:+.1f} / {oi:+.1f}) | {ratio}")
        print(f"| {r['probe']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
