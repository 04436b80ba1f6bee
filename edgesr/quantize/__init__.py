"""int8 for each phone runtime, torchao-style: one verb per technique, configs as dataclasses.

```python
from edgesr.quantize import QuantConfig, ptq, qat, save_quantized
q = ptq(model, "executorch", ["calib/"], QuantConfig(keep_float=["last"]))
q = qat(model, "executorch", ["T91/"], QuantConfig(iterations=500))
save_quantized(q, "safmn_x4_int8.pt")
q = load("safmn_x4_int8.pt")               # the same fake-quant model
```

The target decides the quantizer (XNNPACK's, litert-torch's, Core ML's W8A8 scheme); capture, calibration,
QAT and conversion are shared (PT2E). The result is a fake-quant model that evaluates in PyTorch and that
``edgesr.export`` lowers for the same target.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Attributes load lazily, so `edgesr --help` (which imports this package's command module) loads no torch.
_LAZY = {
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

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """``ptq``, ``qat`` and ``sensitivity`` are both functions and the submodules defining them: importing a
    submodule must not replace the function the package exports under the same name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if _LAZY.get(name) == name and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
