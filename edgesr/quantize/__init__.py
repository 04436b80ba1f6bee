"""int8 for each phone runtime, torchao-style: one verb per technique, configs as dataclasses.

```python
from edgesr.quantize import QuantConfig, ptq, qat, save_quantized
q = ptq(model, "executorch", ["calib/"], QuantConfig(keep_float=["last"]))
q = qat(model, "executorch", ["T91/"], QuantConfig(iterations=500))
save_quantized(q, "safmn_x4_int8.pt")
q = load("safmn_x4_int8.pt")               # the same fake-quant model
ref = q.same_input(fp32_of(q))             # fp32 on the input the int8 graph sees: the drop's reference
```

The target decides the quantizer (XNNPACK's, litert-torch's, Core ML's W8A8 scheme); capture, calibration,
QAT and conversion are shared (PT2E). The result is a fake-quant model that evaluates in PyTorch and that
``edgesr.export`` lowers for the same target.
"""

from __future__ import annotations

from ..lazy import lazy_package

_LAZY = {
    "fp32_of": "checkpoint",
    "is_quantized": "checkpoint",
    "load": "checkpoint",
    "load_model": "checkpoint",
    "load_quantized": "checkpoint",
    "save_quantized": "checkpoint",
    "OBSERVERS": "config",
    "TARGETS": "config",
    "QuantConfig": "config",
    "QuantizedSR": "graph",
    "calibration_inputs": "ptq",
    "ptq": "ptq",
    "qat": "qat",
    "sensitivity": "sensitivity",
}

lazy_package(__name__, _LAZY)
