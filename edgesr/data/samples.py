"""Real photos that the installed dependencies already ship, so the default run needs no data.

scikit-image bundles a few natural photographs inside its wheel (no download). They are split once,
by name, into an evaluation set and a calibration/training set that never overlap.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EdgesrError
from .folders import Benchmark, LRConvention, benchmark_from_arrays
from .io import load_image

EVAL_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
CALIB_IMAGES = ("motorcycle_left.png", "ihc.png", "hubble_deep_field.jpg", "retina.jpg", "color.png",
                "phantom.png")
SAMPLES_NAME = "skimage-samples"


def sample_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise EdgesrError("scikit-image is not installed; pass --data with your own images") from exc
    return Path(skimage.__file__).parent / "data"


def sample_paths(names: tuple[str, ...] = EVAL_IMAGES) -> list[Path]:
    folder = sample_dir()
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise EdgesrError(f"scikit-image sample images missing ({', '.join(missing)}); pass --data")
    return [folder / n for n in names]


def sample_benchmark(scale: int, names: tuple[str, ...] = EVAL_IMAGES, name: str = SAMPLES_NAME,
                     convention: LRConvention = "matlab") -> Benchmark:
    paths = sample_paths(names)
    return benchmark_from_arrays(name, [(p.stem, (lambda p=p: load_image(p))) for p in paths], scale,
                                 source=str(paths[0].parent), convention=convention)
