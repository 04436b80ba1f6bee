"""int8 for each phone runtime, torchao-style: one verb per technique, configs as dataclasses.

```python
from edgesr.quantize import QuantConfig, ptq, qat, save_quantized
q = ptq(model, "executorch", ["calib/"], QuantConfig(keep_float=["last"]))
q = qat(model, "executorch", ["T91/"], QuantConfig(iterations=500))
save_quantized(q, "safmn_x4_int8.pt")       # create("safmn", 4, weights="safmn_x4_int8.pt") reloads it
```

The target decides the quantizer (XNNPACK's, litert-torch's, Core ML's W8A8 scheme); capture, calibration,
QAT and conversion are shared (PT2E). The result is a fake-quant model that evaluates in PyTorch and that
``edgesr.export`` lowers for the same target.
"""

from __future__ import annotations

from .checkpoint import is_quantized, load_quantized, save_quantized
from .config import OBSERVERS, TARGETS, QuantConfig
from .graph import QuantizedSR
from .ptq import calibration_inputs, ptq
from .qat import qat
from .sensitivity import sensitivity

__all__ = ["QuantConfig", "QuantizedSR", "TARGETS", "OBSERVERS", "ptq", "qat", "sensitivity", "save_quantized",
           "load_quantized", "is_quantized", "calibration_inputs"]
