"""The int8 search's stopwatch: export a candidate for its target and time it in that runtime, interleaved
with the fp32 artifact of the same network, so the search picks the fastest configuration within its budget
from measured ratios (not from the int8 share of MACs alone)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..targets import TABLE


class LatencyProbe:
    """``probe(int8_model)`` → ``{"fp32_ms", "int8_ms", "speedup", "input_size", "runtime"}`` for ``target`` at
    ``input_size``; None where the runtime does not run on this host (Core ML on Linux: "converted, not run").
    The fp32 artifact is exported once per probe.

    Each int8 artifact is also run on ``sample`` (an LR image; the search sets one of its validation images)
    beside its fake-quant model: ``artifact_psnr_db`` / ``fake_quant_psnr_db`` are their PSNRs against the fp32
    model's output, and ``faithful`` is False where the artifact is more than ``PARITY_DB`` worse than the model
    the search measured (a converter that computes something else): the search then does not pick it. Where
    the converter cannot lower the configuration at all, ``export_error`` says why and ``faithful`` is False."""

    PARITY_DB = 1.0

    def __init__(self, fp32_model: nn.Module, target: str, input_size: tuple[int, int], threads: int | None = None,
                 rounds: int = 5, workdir: str | Path | None = None, sample: torch.Tensor | None = None) -> None:
        self.fp32_model, self.target, self.input_size = fp32_model, target, tuple(input_size)
        self.sample = sample
        self.threads, self.rounds = threads, rounds
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesr-latency-") if workdir is None else None
        self.dir = Path(workdir) if workdir is not None else Path(self._tmp.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fp32: Path | None = None
        self._count = 0

    def runs_here(self) -> bool:
        return TABLE[self.target].runs_on_host

    def __call__(self, int8_model: nn.Module) -> dict[str, Any] | None:
        if not self.runs_here():
            return None
        from .exporters import export
        from .runtimes import interleaved_latency

        suffix = TABLE[self.target].suffix
        if self._fp32 is None:
            self._fp32 = self.dir / f"fp32{suffix}"
            export(self.fp32_model, self.target, "fp32", self.input_size, self._fp32)
        self._count += 1
        path = self.dir / f"int8_{self._count}{suffix}"
        try:
            export(self.fp32_model, self.target, "int8", self.input_size, path, quantized=int8_model)
        except Exception as exc:  # a converter that cannot lower this configuration: the search moves on
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return {"runtime": self.target, "input_size": list(self.input_size), "faithful": False,
                    "export_error": f"{type(exc).__name__}: {first}"}
        rows = interleaved_latency([self._fp32, path], self.threads, self.rounds)
        fp32, int8 = rows[0]["median_ms"], rows[1]["median_ms"]
        return {"fp32_ms": round(fp32, 3), "int8_ms": round(int8, 3), "speedup": round(fp32 / int8, 3),
                "input_size": list(self.input_size), "runtime": self.target, "threads": self.threads,
                "rounds": self.rounds, **self.parity(path, int8_model)}

    @torch.no_grad()
    def parity(self, path: Path, int8_model: nn.Module) -> dict[str, Any]:
        """How close the artifact's output is to the fp32 model's, beside the fake-quant model's."""
        from ..metrics import psnr
        from .exporters import example_input, fit_to
        from .runtimes import load_runner
        from .spec import read_sidecar

        x = fit_to(self.sample, self.input_size) if self.sample is not None else example_input(self.input_size)
        ref = self.fp32_model(x).clamp(0, 1).numpy()
        art = np.clip(load_runner(path, read_sidecar(path), self.threads)(x.numpy()), 0, 1)
        fq = int8_model(x).clamp(0, 1).numpy()
        a, f = (min(100.0, psnr(v, ref, peak=1.0)) for v in (art, fq))
        return {"artifact_psnr_db": round(a, 2), "fake_quant_psnr_db": round(f, 2),
                "faithful": bool(a >= f - self.PARITY_DB)}

