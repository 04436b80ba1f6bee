"""Export to ExecuTorch (XNNPACK), TFLite (LiteRT), Core ML and ONNX, and check every artifact in its runtime.

```python
from edgesr.export import ModelRef, export, check_artifact
info = export(model, "executorch", "fp32", (180, 320), "safmn_x4.pte", ref=ModelRef("safmn", 4, "w.pth"))
report = check_artifact("safmn_x4.pte", ["Set5"], threads=2)
```

Attributes load lazily: ``import edgesr.export`` (done by the CLI) costs nothing; torch and the runtimes
are imported by the functions that need them.
"""

from __future__ import annotations

from ..lazy import lazy_package

_LAZY = {
    "export": "exporters", "export_by_name": "exporters", "ModelRef": "exporters", "lower_executorch": "exporters",
    "delegation_report": "exporters", "bundled_program": "exporters", "check_input_size": "exporters",
    "check_artifact": "check", "format_report": "check", "run_tiled": "check", "plan_axis": "check",
    "load_runner": "runtimes", "measure_latency": "runtimes", "coreml_mil_summary": "runtimes",
    "device_script": "device", "device_report": "device", "parse_benchmark_model": "device",
    "parse_executor_runner": "device",
    "ArtifactInfo": "spec", "TargetConfig": "spec", "AndroidProfile": "spec", "ExportError": "spec",
    "read_sidecar": "spec", "target_config": "spec", "load_profile": "spec", "parse_input_size": "spec",
}

lazy_package(__name__, _LAZY)
