"""One row of the report: a model × target × precision × dataset, with where its number came from.

``edgesr run`` builds these from its finished stages (:func:`edgesr.run.rows.collect`); :func:`edgesr.report.build`
takes them (or their JSON form) and adds the drops. One record, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReportRow", "MEASURED_IN"]

MEASURED_IN = ("runtime", "pytorch-simulated", "converted, not run")


@dataclass
class ReportRow:
    model: str
    scale: int
    target: str                                  # a runtime target, or "pytorch"
    precision: str
    dataset: str
    runtime: str                                 # what ran it: "PyTorch eager", "ExecuTorch (XNNPACK)", ...
    measured_in: str                             # one of MEASURED_IN
    images: int | None = None
    psnr_y: float | None = None
    ssim_y: float | None = None
    parity: dict[str, Any] | None = None         # {max_abs, psnr, reference}
    latency_ms: dict[str, Any] | None = None     # {median, p90, runs, threads, input_size}
    size_bytes: int | None = None
    delegation: dict[str, Any] | None = None     # {percent, backend, not_delegated}
    command: str = ""                            # what reproduces this number
    artifact: str | None = None
    notes: list[str] = field(default_factory=list)
    reference_psnr_y: float | None = None        # simulated int8: fp32 on the input the int8 graph saw (padded)
    # per image (name -> PSNR-Y): the drop's standard error comes from them (5 Set5 images cannot resolve 0.01 dB)
    per_image_psnr_y: dict[str, float] | None = None
    reference_per_image_psnr_y: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.measured_in not in MEASURED_IN:
            raise ValueError(f"row {self.target} {self.precision}: measured_in must be one of "
                             f"{', '.join(MEASURED_IN)}, got {self.measured_in!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReportRow":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - known - {"drop_db", "drop_vs", "drop_se_db"})
        if extra:
            raise ValueError(f"report row has unknown keys: {', '.join(extra)}")
        return cls(**{k: v for k, v in data.items() if k in known})
