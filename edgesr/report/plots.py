"""The report's plots as PNG (matplotlib, Agg backend): accuracy vs latency per runtime, fp32/int8 bars,
per-layer sensitivity. Each function takes report rows (dicts, see build.py) and returns the file it wrote,
or None when the rows hold nothing to plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _colors(keys: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def accuracy_latency(rows: Sequence[dict[str, Any]], out: str | Path) -> Path | None:
    """PSNR-Y against median latency, one colour per target, one marker per precision, one panel per dataset.

    Simulated rows (PyTorch fake-quant) are drawn hollow: their latency is PyTorch's, not the runtime's.
    """
    pts = [r for r in rows if _num(r.get("psnr_y")) and r.get("latency_ms") and _num(r["latency_ms"].get("median"))]
    if not pts:
        return None
    plt = _plt()
    datasets = list(dict.fromkeys(r["dataset"] for r in pts))
    colors = _colors(list(dict.fromkeys(r["target"] for r in pts)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), dpi=90, squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for r in (r for r in pts if r["dataset"] == ds):
            hollow = r["measured_in"] != "runtime"
            c = colors[r["target"]]
            ax.scatter(r["latency_ms"]["median"], r["psnr_y"], s=60, marker=MARKERS.get(r["precision"], "o"),
                       facecolors="none" if hollow else c, edgecolors=c, linewidths=1.5,
                       label=f"{r['target']} {r['precision']}" + (" (simulated)" if hollow else ""))
        ax.set_xlabel("latency, median ms (one input window)")
        ax.set_ylabel("PSNR-Y (dB)")
        ax.set_title(ds, fontsize=10)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(useOffset=False, style="plain", axis="y")
        ys = [r["psnr_y"] for r in pts if r["dataset"] == ds]
        mid, half = (max(ys) + min(ys)) / 2, max(0.25, (max(ys) - min(ys)) * 0.65)
        ax.set_ylim(mid - half, mid + half)
        ax.margins(x=0.15)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("accuracy vs latency per runtime (hollow: PyTorch-simulated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


def precision_bars(rows: Sequence[dict[str, Any]], out: str | Path) -> Path | None:
    """PSNR-Y of fp32 and int8 side by side per target and dataset, int8 drop written above each pair."""
    pts = [r for r in rows if _num(r.get("psnr_y")) and r["precision"] in ("fp32", "int8")]
    if not pts:
        return None
    plt = _plt()
    import numpy as np

    datasets = list(dict.fromkeys(r["dataset"] for r in pts))
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5.0, 1.6 * len({r['target'] for r in pts}) + 2) *
                                                        len(datasets), 3.8), dpi=90, squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        groups, vals = _bar_groups([r for r in pts if r["dataset"] == ds])
        x = np.arange(len(groups))
        allv = [v for p in vals.values() for v in p if _num(v)]
        lo, hi = min(allv), max(allv)
        for i, (p, color) in enumerate((("fp32", "#4c72b0"), ("int8", "#dd8452"))):
            ax.bar(x + (i - 0.5) * 0.38, [v if _num(v) else 0 for v in vals[p]], width=0.38, label=p, color=color)
        for i in range(len(groups)):
            a, b = vals["fp32"][i], vals["int8"][i]
            if _num(a) and _num(b):
                ax.text(x[i], max(a, b) + 0.02 * (hi - lo + 0.5), f"−{a - b:.2f} dB", ha="center", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels(groups, fontsize=7)
        ax.set_ylim(lo - 0.6 - 0.3 * (hi - lo), hi + 0.4 + 0.2 * (hi - lo))
        ax.set_ylabel("PSNR-Y (dB)")
        ax.set_title(ds, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("fp32 vs int8 (bars start above 0: the y axis is zoomed on the differences)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


def _bar_groups(rows: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, list[float]]]:
    """Pairs to compare: each runtime's fp32 and int8 artifacts; PyTorch fp32 with each simulated int8."""
    torch_fp32 = next((r["psnr_y"] for r in rows if r["target"] == "pytorch" and r["precision"] == "fp32"), math.nan)
    sims = [r for r in rows if r["measured_in"] == "pytorch-simulated" and r["precision"] == "int8"]
    groups: list[str] = []
    vals: dict[str, list[float]] = {"fp32": [], "int8": []}
    if sims:
        for r in sims:
            groups.append(f"PyTorch\n(int8 sim. {r['target']})")
            vals["fp32"].append(torch_fp32)
            vals["int8"].append(r["psnr_y"])
    elif not math.isnan(torch_fp32):
        groups.append("PyTorch")
        vals["fp32"].append(torch_fp32)
        vals["int8"].append(math.nan)
    for target in dict.fromkeys(r["target"] for r in rows if r["measured_in"] == "runtime" and r["target"] != "pytorch"):
        groups.append(target)
        for p in ("fp32", "int8"):
            match = [r["psnr_y"] for r in rows if r["target"] == target and r["precision"] == p
                     and r["measured_in"] == "runtime"]
            vals[p].append(match[0] if match else math.nan)
    return groups, vals


def sensitivity(per_target: Sequence[dict[str, Any]], out: str | Path, top: int = 15) -> Path | None:
    """Horizontal bars: PSNR drop when only that layer is int8, worst ``top`` layers, one panel per target."""
    items = [t for t in per_target if t.get("layers")]
    if not items:
        return None
    plt = _plt()
    n = min(top, max(len(t["layers"]) for t in items))
    fig, axes = plt.subplots(1, len(items), figsize=(6.0 * len(items), 0.28 * n + 1.4), dpi=90, squeeze=False)
    for ax, t in zip(axes[0], items):
        layers = sorted(t["layers"], key=lambda d: -d["drop_db"])[:top][::-1]
        ax.barh([d["layer"] for d in layers], [d["drop_db"] for d in layers], color="#c44e52")
        ax.set_xlabel("PSNR-Y drop vs HR (dB) with only this layer in int8 (validation images)", fontsize=8)
        ax.set_title(t["target"], fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("per-layer sensitivity (worst first)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


def search(per_target: dict[str, Any], out: str | Path) -> Path | None:
    """The int8 search's trials per target: validation drop vs the share of MACs in int8 (every trial), and, for
    the finalists timed in the runtime, drop vs measured int8 latency beside the fp32 latency; choice marked."""
    targets = {t: s for t, s in per_target.items() if s.get("trials")}
    if not targets:
        return None
    plt = _plt()
    timed = any((t.get("latency") or {}).get("int8_ms") for s in targets.values() for t in s["trials"])
    fig, axes = plt.subplots(2 if timed else 1, len(targets), figsize=(4.5 * len(targets), 3.6 * (2 if timed else 1)),
                             dpi=90, squeeze=False)
    for col, (target, s) in enumerate(targets.items()):
        ax = axes[0][col]
        trials = s["trials"]
        ax.scatter([100 * t["int8_mac_share"] for t in trials], [t["drop_db"] for t in trials], color="#4c72b0",
                   s=18, label="trials")
        c = s.get("chosen") or {}
        if c:
            ax.scatter([100 * c["int8_mac_share"]], [c["drop_db"]], color="#c44e52", marker="*", s=140,
                       label="chosen", zorder=3)
        ax.axhline(s["budget_db"], color="gray", linestyle="--", linewidth=1, label=f"budget {s['budget_db']:g} dB")
        ax.set_xlabel("int8 share of MACs (%), the speed proxy")
        ax.set_ylabel("validation PSNR-Y drop (dB)")
        ax.set_title(target, fontsize=9)
        ax.legend(fontsize=7)
        if not timed:
            continue
        ax = axes[1][col]
        fin = [t for t in trials if (t.get("latency") or {}).get("int8_ms")]  # not those whose export failed
        if fin:
            ax.scatter([t["latency"]["int8_ms"] for t in fin], [t["drop_db"] for t in fin], color="#4c72b0", s=24,
                       label="finalists (int8, in the runtime)")
            ax.axvline(fin[0]["latency"]["fp32_ms"], color="#55a868", linewidth=1, label="fp32 latency")
            size = fin[0]["latency"].get("input_size") or ["?", "?"]
            ax.set_xlabel(f"{target} latency (ms, {size[0]}x{size[1]} LR)")
        if (c.get("latency") or {}).get("int8_ms"):
            ax.scatter([c["latency"]["int8_ms"]], [c["drop_db"]], color="#c44e52", marker="*", s=140,
                       label="chosen", zorder=3)
        ax.axhline(s["budget_db"], color="gray", linestyle="--", linewidth=1)
        ax.set_ylabel("validation PSNR-Y drop (dB)")
        ax.set_title(f"{target}: drop vs measured latency", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


__all__ = ["accuracy_latency", "precision_bars", "sensitivity", "search"]
