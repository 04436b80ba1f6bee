"""``edgesr run``: one recipe, every stage from teacher to report, cached and resumable.

```python
from edgesr.run import load_run_recipe, run
report_html = run(load_run_recipe("recipes/quickstart.yaml"), "runs/quickstart")
```

Stages are plain functions (:mod:`edgesr.run.stages`); :mod:`edgesr.run.cache` keys each by a hash of its
inputs and publishes its folder atomically; :mod:`edgesr.run.pipeline` plans and runs them. Importing this
package costs nothing heavy; torch and the runtimes load inside the stages.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run": "pipeline", "build_plan": "pipeline", "collect": "pipeline", "RunInterrupted": "pipeline",
    "load_run_recipe": "recipe", "RunRecipe": "recipe",
    "RunError": "cache", "stage_key": "cache", "run_cached": "cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
