"""Side-by-side crops: HR | bicubic | fp32 | int8 | error heat-map, one figure per runtime.

The heat-map shows |int8 − fp32| on the Y channel (what quantization changed), on a fixed 0–16 grey-level
scale so figures of different runtimes compare at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..metrics import psnr, rgb_to_y

HEAT_MAX = 16.0     # grey levels at the top of the heat-map colour scale


def pick_window(lr: np.ndarray, size: tuple[int, int] | Sequence[int]) -> tuple[int, int, int, int]:
    """(y, x, h, w) of the ``size`` window of an H×W×3 uint8 image with the most detail (gradient energy).

    Deterministic; images smaller than the window give the whole image.
    """
    h, w = min(int(size[0]), lr.shape[0]), min(int(size[1]), lr.shape[1])
    y_img = lr.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0
    g = np.zeros_like(y_img)
    g[:, 1:] += np.abs(np.diff(y_img, axis=1))
    g[1:, :] += np.abs(np.diff(y_img, axis=0))
    ii = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]
    stride = max(1, min(h, w) // 4)
    sub = sums[::stride, ::stride]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return int(iy * stride), int(ix * stride), h, w


def load(img: Any) -> np.ndarray | None:
    """A crop given as an H×W×3 uint8 array or a PNG path."""
    if img is None:
        return None
    if isinstance(img, np.ndarray):
        return img
    from PIL import Image

    with Image.open(img) as im:
        return np.asarray(im.convert("RGB"))


def crop_figure(hr: np.ndarray, bicubic: np.ndarray, fp32: np.ndarray | None, int8: np.ndarray | None,
                out: str | Path, title: str, labels: tuple[str, str] = ("fp32", "int8")) -> Path:
    """Write one figure (PNG): HR, bicubic, fp32, int8 and the |int8 − fp32| heat-map of the Y channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray | None]] = [("HR", hr), ("bicubic", bicubic), (labels[0], fp32),
                                                   (labels[1], int8)]
    fig, axes = plt.subplots(1, 5, figsize=(13.5, 3.2), dpi=90)
    for ax, (name, img) in zip(axes, panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if img is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_title(name, fontsize=9)
            continue
        ax.imshow(img, interpolation="nearest")
        sub = "" if name == "HR" else f"\n{psnr(rgb_to_y(img), rgb_to_y(hr)):.2f} dB vs HR"
        ax.set_title(f"{name}{sub}", fontsize=9)
    ax = axes[4]
    ax.set_xticks([])
    ax.set_yticks([])
    if fp32 is not None and int8 is not None:
        diff = np.abs(rgb_to_y(int8) - rgb_to_y(fp32))
        im = ax.imshow(diff, cmap="inferno", vmin=0.0, vmax=HEAT_MAX, interpolation="nearest")
        ax.set_title(f"|{labels[1]} − {labels[0]}| (Y)\nmax {diff.max():.1f}, mean {diff.mean():.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    else:
        ax.text(0.5, 0.5, "needs fp32 and int8", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title("error heat-map", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out = Path(out)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


__all__ = ["pick_window", "crop_figure", "load", "HEAT_MAX"]
