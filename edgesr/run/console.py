"""What a run shows and how it stops: one line per stage, library output to logs, Ctrl-C / SIGTERM handling."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

from .cache import StageResult
from .plan import Unit

# --------------------------------------------------------------------------------- display
class Display:
    """One line per stage: '[3/12] export executorch int8 ... 41 s' (a live counter on a terminal), then
    'done in 41.2 s' or 'cached'. Library output goes to OUT/logs/<stage>.log unless verbose."""

    def __init__(self, stream: TextIO, total: int, enabled: bool = True):
        self.stream, self.total, self.enabled = stream, total, enabled
        self.tty = enabled and getattr(stream, "isatty", lambda: False)()

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, i: int, unit: Unit) -> Iterator[None]:
        head = f"[{i}/{self.total}] {unit.title}"
        stop = threading.Event()
        start = time.perf_counter()
        ticker = None
        if self.tty:
            def tick() -> None:
                while not stop.wait(1.0):
                    self.stream.write(f"\r{head} ... {time.perf_counter() - start:.0f} s")
                    self.stream.flush()
            self.stream.write(f"{head} ...")
            self.stream.flush()
            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        elif self.enabled:
            self.line(f"{head} ...")
        failed: str | None = None
        try:
            yield
        except KeyboardInterrupt:
            failed = "interrupted"
            raise
        except BaseException:
            failed = "failed"
            raise
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
                self.stream.write("\r" + " " * (len(head) + 12) + "\r")
                self.stream.flush()
            if failed and self.enabled:
                self.line(f"{head}: {failed} after {time.perf_counter() - start:.1f} s")

    def done(self, i: int, unit: Unit, result: StageResult) -> None:
        head = f"[{i}/{self.total}] {unit.title}"
        if result.cached:
            self.line(f"{head}: cached")
        elif self.tty:
            self.line(f"{head}: done in {result.seconds:.1f} s")
        else:
            self.line(f"{' ' * len(f'[{i}/{self.total}]')} done in {result.seconds:.1f} s")


def console() -> tuple[TextIO, bool]:
    """A stream to the terminal that survives :func:`captured`, and whether fd capture is possible."""
    try:
        fd = sys.stdout.fileno()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout, False
    sys.stdout.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1), True


@contextlib.contextmanager
def captured(log: Path | None) -> Iterator[None]:
    """Send fd 1 and 2 (Python, C++ and tqdm output of the libraries) to ``log`` while a stage runs."""
    if log is None:
        yield
        return
    fds = (sys.stdout.fileno(), sys.stderr.fileno())
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        for fd in fds:
            os.dup2(f.fileno(), fd)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd, s in zip(fds, saved):
            os.dup2(s, fd)
            os.close(s)


STOP = threading.Event()  # set by Ctrl-C / SIGTERM; checked when a stage returns


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a job scheduler) ends the run like Ctrl-C: the stage in flight is dropped cleanly.

    The handler also sets ``STOP``: Python drops an exception raised while a weakref or ``__del__``
    callback runs ("Exception ignored in ..."), so a signal landing there would let the stage finish and
    the run go on; ``_run_unit`` checks the flag before a stage is published."""
    def handler(signum: int, frame: Any) -> None:
        STOP.set()
        raise KeyboardInterrupt

    STOP.clear()
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
        STOP.clear()


__all__ = ["Display", "console", "captured", "sigterm_as_interrupt", "STOP"]
