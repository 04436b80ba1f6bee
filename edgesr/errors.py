"""User-facing errors: the CLI prints these as one line and exits 2, never a traceback."""

from __future__ import annotations


class EdgesrError(Exception):
    """An error caused by the user's input (paths, names, files, options)."""

    exit_code = 2


class CheckpointError(EdgesrError, ValueError):
    """A weights file that cannot be read or does not fit the model it is loaded into."""


class UsageError(EdgesrError, ValueError):
    """A name or option that edgesr does not know (unknown model, unsupported scale ...)."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (what the CLI prints), its type name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
