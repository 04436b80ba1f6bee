"""Stage outputs cached by a hash of their inputs, so a re-run resumes instead of starting over.

A stage's key is the sha256 of what determines its outputs: the stage name, its recipe section, the keys
of the stages it consumes, fingerprints of the files it reads (weights, images) and the edgesr version.
Its outputs live in ``OUT/stages/<unit>-<key12>/``. They are written into a hidden temporary folder that is
renamed into place only after the stage returned and its ``stage.json`` marker is written, so a crash, a
Ctrl-C or a SIGKILL never leaves a folder that looks finished. Leftover temporary folders are removed by
the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..io_utils import sha256_of
from ..errors import EdgesrError
from ..io_utils import atomic_write_text

MARKER = "stage.json"
STAGES_DIR = "stages"
WORK_DIR = "work"
LOCK_FILE = ".edgesr-run.lock"
TMP_PREFIX = ".tmp-"


class RunError(EdgesrError):
    """A run that cannot start or continue (busy output folder, missing input, failed stage ...)."""


@dataclass
class StageResult:
    """A finished stage: where its files are and the small JSON values it produced."""

    unit: str
    key: str
    dir: Path
    outputs: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0

    def path(self, name: str) -> Path:
        """A file the stage wrote, by its output name (outputs store names relative to the stage dir)."""
        return self.dir / self.outputs[name]


# ------------------------------------------------------------------------------------ keys
def stage_key(unit: str, config: Any, upstream: dict[str, str] | None = None,
              files: dict[str, str] | None = None) -> str:
    """sha256 of everything a stage's outputs depend on (``files``: role -> content fingerprint)."""
    payload = {"unit": unit, "config": config, "upstream": dict(sorted((upstream or {}).items())),
               "files": dict(sorted((files or {}).items())), "edgesr": __version__}
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


file_sha256 = sha256_of


def folder_fingerprint(folder: str | Path) -> str:
    """Cheap identity of a data folder: every file's relative path, size and mtime (not the pixels)."""
    folder = Path(folder)
    h = hashlib.sha256(str(folder.resolve()).encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def files_fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\n".encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------- stage dirs
def stage_dir(root: Path, unit: str, key: str) -> Path:
    return root / STAGES_DIR / f"{_slug(unit)}-{key[:12]}"


def work_dir(root: Path, unit: str, key: str) -> Path:
    """A persistent scratch folder for long stages (training) that resume inside the stage."""
    return root / WORK_DIR / f"{_slug(unit)}-{key[:12]}"


def load_finished(root: Path, unit: str, key: str) -> StageResult | None:
    """The finished stage for ``key``, or None (a folder without a valid marker is not finished)."""
    d = stage_dir(root, unit, key)
    try:
        meta = json.loads((d / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("key") != key or not isinstance(meta.get("outputs"), dict):
        return None
    return StageResult(unit, key, d, meta["outputs"], cached=True, seconds=float(meta.get("seconds", 0.0)))


def run_cached(root: Path, unit: str, key: str, fn: Callable[[Path], dict[str, Any]],
               info: dict[str, Any] | None = None) -> StageResult:
    """Return the finished stage for ``key``, or run ``fn(tmp_dir) -> outputs`` and publish it atomically."""
    done = load_finished(root, unit, key)
    if done is not None:
        return done
    final = stage_dir(root, unit, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    start = time.perf_counter()
    try:
        outputs = fn(tmp) or {}
        seconds = time.perf_counter() - start
        meta = {"unit": unit, "key": key, "outputs": outputs, "seconds": round(seconds, 3),
                "edgesr": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})}
        atomic_write_text(tmp / MARKER, json.dumps(meta, indent=2, default=str) + "\n")
        if final.exists():  # an unfinished folder of the same key (marker missing): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return StageResult(unit, key, final, outputs, cached=False, seconds=seconds)


def clean_stale(root: Path) -> int:
    """Remove temporary stage folders left by a killed run (call only while holding the lock)."""
    stages = root / STAGES_DIR
    n = 0
    if stages.is_dir():
        for p in stages.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """One run per output folder at a time; the OS drops the lock when the process dies, even on SIGKILL."""
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another edgesr run is using {root}; wait for it or choose another --out") from None
        yield
    finally:
        os.close(fd)


def _slug(unit: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in unit)


__all__ = ["RunError", "StageResult", "stage_key", "file_sha256", "folder_fingerprint", "files_fingerprint",
           "stage_dir", "work_dir", "load_finished", "run_cached", "clean_stale", "run_lock", "MARKER"]
