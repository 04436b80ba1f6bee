"""edgesr's model zoo: weights shipped inside the package, so nothing is ever downloaded.

``create(name, scale, weights="zoo")`` resolves to ``<name>_x<scale>.pth`` here; each file has a model
card (``<name>_x<scale>.md``) that says where it came from and what it measured.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

ZOO_DIR = Path(__file__).parent


def available() -> list[tuple[str, int]]:
    out = []
    for p in sorted(ZOO_DIR.glob("*_x[0-9].pth")):
        name, _, scale = p.stem.rpartition("_x")
        out.append((name, int(scale)))
    return out


def zoo_path(name: str, scale: int) -> Path:
    path = ZOO_DIR / f"{name}_x{scale}.pth"
    if not path.is_file():
        have = ", ".join(f"{n} x{s}" for n, s in available()) or "none"
        raise CheckpointError(f"the edgesr zoo has no weights for {name} x{scale} (available: {have})")
    return path
