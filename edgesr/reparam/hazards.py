"""What stops code edgesr did not write from exporting, said in one line: the op, the module path, the fix.

``torch.export`` handles most of what research code does (in-place activations are functionalized,
``F.interpolate(size=x.shape[2:])`` is traced symbolically); what it cannot trace — reading a tensor's value
in Python (``.item()``, ``if x.max() > 1``), shape arithmetic that specializes the graph to one size — raises
deep inside torch. :func:`explain_export_failure` finds the user's line and the module that was running.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from typing import Iterator

import torch
from torch import nn

from ..errors import EdgesrError

__all__ = ["ExportHazard", "explain_export_failure", "tracking_modules", "no_inplace_modules"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_EDGESR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HINTS = (
    (("data-dependent", "data dependent", "guardondatadependent", ".item()", "item()", "could not extract specialized integer",
      "could not guard on data-dependent"),
     "the forward reads a tensor's value in Python (.item(), int(t), `if t > 0`): keep it a tensor op "
     "(torch.where, clamp) so the graph does not depend on the data"),
    (("constraints violated", "specialized", "not all values of", "dynamic shape", "must be specialized"),
     "the forward's Python shape arithmetic only works for some input sizes: declare `size_multiple` / "
     "`min_size` on the model, or compute sizes with tensor ops (F.interpolate(size=x.shape[-2:]) is fine)"),
    (("inplace", "in-place", "mutat"),
     "an in-place op on a tensor the graph still needs: use the out-of-place form (relu instead of relu_)"),
)


class ExportHazard(EdgesrError):
    """Code that torch.export cannot trace, with where and what to change."""


class _Stack:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.deepest: str = ""


@contextlib.contextmanager
def tracking_modules(model: nn.Module) -> Iterator[_Stack]:
    """Keep the path of the innermost module that is running (what a failure is reported against)."""
    stack = _Stack()
    handles = []
    for name, m in model.named_modules():
        def pre(_m: nn.Module, _a: tuple, name: str = name) -> None:
            stack.names.append(name)
            stack.deepest = name

        def post(_m: nn.Module, _a: tuple, _o: object) -> None:
            if stack.names:
                stack.names.pop()
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (exporters wrap the error raised in the user's code)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    for e in reversed(_chain(exc)):  # innermost first
        frames = traceback.extract_tb(e.__traceback__)
        user = [f for f in frames if not os.path.abspath(f.filename).startswith((_TORCH_DIR, _EDGESR_DIR))
                and "site-packages" not in f.filename and not f.filename.startswith("<")]
        if user:
            return user[-1]
    return None


def explain_export_failure(exc: BaseException, model: nn.Module | None = None, what: str = "export",
                           module_path: str | None = None) -> ExportHazard:
    """One line: what failed, in which module and source line, and the change that makes it export."""
    inner = _chain(exc)[-1]
    text = " ".join(str(inner).split())
    low = " ".join(type(e).__name__ + " " + str(e) for e in _chain(exc)).lower()
    hint = next((h for keys, h in _HINTS if any(k in low for k in keys)),
                "rewrite that op with standard torch ops, or declare `size_multiple` / `min_size` on the model")
    frame = _user_frame(exc)
    where = f" at {os.path.relpath(frame.filename)}:{frame.lineno} `{(frame.line or '').strip()}`" if frame else ""
    mod = f" in module {module_path!r}" if module_path else ""
    first = text[:200] + ("..." if len(text) > 200 else "")
    return ExportHazard(f"{what} failed{mod}{where}: {type(inner).__name__}: {first} -> {hint}")


def no_inplace_modules(model: nn.Module) -> nn.Module:
    """``inplace=False`` on every module that has the switch (ReLU, LeakyReLU, ...): same values, and a graph
    whose activations the quantizers annotate like any other op."""
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return model
