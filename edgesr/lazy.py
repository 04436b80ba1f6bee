"""Packages whose attributes load on first use: ``import edgesr.export`` (done by the CLI to register its
verbs) costs nothing, and torch and the runtimes are imported by the functions that need them."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["lazy_package"]


class _LazyPackage(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        where = self.__dict__.get("_lazy_attributes", {}).get(name)
        if where is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{self.__name__}.{where}"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``ptq`` is both a function and the submodule defining it: importing the submodule must not
        # replace the function the package exports under that name
        if isinstance(value, types.ModuleType) and self.__dict__.get("_lazy_attributes", {}).get(name) == name:
            return
        super().__setattr__(name, value)


def lazy_package(name: str, attributes: dict[str, str]) -> None:
    """Make package ``name`` resolve each of ``attributes`` (attribute -> submodule) on first use."""
    module = sys.modules[name]
    module.__class__ = _LazyPackage
    module._lazy_attributes = dict(attributes)
    module.__all__ = sorted(attributes)
