"""A timm-style registry: each architecture file registers plain factory functions."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import UsageError

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}

SCALES = (2, 3, 4)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(scale: int = 4, **overrides) -> nn.Module`` under its function name."""
    if fn.__name__ in _FACTORIES:
        raise RuntimeError(f"model {fn.__name__!r} registered twice")
    _FACTORIES[fn.__name__] = fn
    return fn


def factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(sorted(_FACTORIES))}") from None


def names() -> list[str]:
    return sorted(_FACTORIES)
