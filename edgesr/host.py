"""The host a number was measured on, with its int8 dot-product instructions (int8 speed-ups depend on them)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["machine", "dot_product_instructions"]

DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def _cpu(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    cpu, flags = "", set()
    try:
        if cpuinfo is None:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        for line in cpuinfo.splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu or platform.processor() or platform.machine(), flags


def dot_product_instructions(cpuinfo: str | None = None) -> list[str]:
    return [f for f in DOT_PRODUCT_FLAGS if f in _cpu(cpuinfo)[1]]


def machine(cpuinfo: str | None = None) -> str:
    """Host description with its int8 dot-product instructions: int8-vs-fp32 speed-ups depend on them (XNNPACK's
    int8 GEMM is no faster than fp32 on AVX2 without VNNI, ~1.5x with AVX-512 VNNI), so a ratio travels with it."""
    cpu, flags = _cpu(cpuinfo)
    dot = [f for f in DOT_PRODUCT_FLAGS if f in flags]
    isa = f", int8 dot product: {'/'.join(dot) or 'none'}" if flags else ""
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs{isa}"
