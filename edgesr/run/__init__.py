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

from ..lazy import lazy_package

_LAZY = {
    "run": "pipeline", "build_plan": "pipeline", "collect": "pipeline", "RunInterrupted": "pipeline",
    "load_run_recipe": "recipe", "RunRecipe": "recipe",
    "RunError": "cache", "stage_key": "cache", "run_cached": "cache",
}

lazy_package(__name__, _LAZY)
