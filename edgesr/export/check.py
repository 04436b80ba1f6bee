"""``edgesr check``: run an artifact in its own runtime and judge it against the PyTorch model it came from.

Fixed-size artifacts see images through windows of exactly their input size: overlapping windows placed
with ``edgesr.evaluate.tile_starts`` (last one flush with the edge), each keeping the part of its output
nearest its centre (core + context, as ``super_resolve``); images smaller than the window are padded
(replicate) and the output cropped. The same windows go through PyTorch, so parity measures only the
runtime, and PyTorch tiled vs whole measures only the tiling.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..evaluate import tile_starts
from ..host import machine as _machine
from .spec import ArtifactInfo, ExportError, artifact_size, read_sidecar, resolve_beside, sha256_of

SCHEMA = "edgesr-check/1"


# --------------------------------------------------------------------------------- tiling
def plan_axis(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows along one axis as (window start, keep start, keep end) in image coordinates.

    Neighbouring windows share ``overlap`` pixels and split them in the middle, so every kept pixel has
    about ``overlap / 2`` pixels of context on the sides that have neighbours.
    """
    if length <= tile:
        return [(0, 0, length)]
    starts = tile_starts(length, tile, overlap)
    bounds = [0] + [(starts[i] + starts[i - 1] + tile) // 2 for i in range(1, len(starts))] + [length]
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def default_overlap(tile: int) -> int:
    return min(32, tile // 2)


def run_tiled(run: Any, lr: np.ndarray, scale: int, tile: tuple[int, int], overlap: int,
              also: Any = None) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Super-resolve a 1×3×h×w float32 image window by window with ``run`` (and ``also``, if given).

    Returns the assembled SR of ``run``, that of ``also``, and the largest |run − also| seen on any window
    output (NaN without ``also``).
    """
    _, _, h, w = lr.shape
    th, tw = tile
    ph, pw = max(h, th), max(w, tw)
    if (ph, pw) != (h, w):
        lr = np.pad(lr, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    sr = np.zeros((1, 3, ph * scale, pw * scale), np.float32)
    sr2 = np.zeros_like(sr) if also is not None else None
    worst = 0.0 if also is not None else math.nan
    for ys, ya, yb in plan_axis(ph, th, overlap):
        for xs, xa, xb in plan_axis(pw, tw, overlap):
            win = np.ascontiguousarray(lr[:, :, ys:ys + th, xs:xs + tw])
            outs = [run(win)] + ([also(win)] if also is not None else [])
            if also is not None:
                worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
            for dst, out in zip([sr, sr2], outs):
                dst[:, :, ya * scale:yb * scale, xa * scale:xb * scale] = \
                    out[:, :, (ya - ys) * scale:(yb - ys) * scale, (xa - xs) * scale:(xb - xs) * scale]
    crop = (slice(None), slice(None), slice(0, h * scale), slice(0, w * scale))
    return sr[crop], (sr2[crop] if sr2 is not None else None), worst


def count_windows(h: int, w: int, tile: tuple[int, int], overlap: int) -> int:
    return len(plan_axis(max(h, tile[0]), tile[0], overlap)) * len(plan_axis(max(w, tile[1]), tile[1], overlap))


# -------------------------------------------------------------------------------- reference
def reference_model(artifact: Path, info: ArtifactInfo, spec: Any = None) -> Any:
    """The PyTorch model the artifact was exported from (weights verified by hash), rebuilt from the spec its
    sidecar records (``spec`` overrides where the network's code is, e.g. after moving the file)."""
    from ..models import ModelSpec
    from ..quantize.checkpoint import load_model

    weights = resolve_beside(artifact, info.weights)
    if weights is not None:
        if not weights.is_file():
            raise ExportError(f"weights recorded in {artifact.name}.json not found: {weights}")
        if info.weights_sha256 and sha256_of(weights) != info.weights_sha256:
            raise ExportError(f"weights file {weights} changed since export (sha256 differs); re-export")
    recorded = ModelSpec.from_json(info.spec) if info.spec else ModelSpec(info.model, info.scale,
                                                                          param_key=info.param_key)
    if spec is not None:
        recorded = recorded.replace(model=spec.model, kwargs=spec.kwargs or recorded.kwargs)
    recorded = recorded.replace(weights=None if weights is None else str(weights), structure=None)
    return load_model(recorded)


def scaled_runner(run: Any, input_range: float) -> Any:
    """An artifact that takes [0, input_range] seen as one taking [0, 1] (what every comparison uses)."""
    if input_range == 1:
        return run

    def scaled(x: np.ndarray) -> np.ndarray:
        return run(x * np.float32(input_range)) / np.float32(input_range)

    return scaled


def _torch_runner(model: Any) -> Any:
    import torch

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    return run


# ------------------------------------------------------------------------------------ check
def check_artifact(path: str | Path, data: Sequence[str | Path] | None = None, *, threads: int | None = None,
                   runs: int = 20, overlap: int | None = None, memory: bool = True, op_profile: bool = True,
                   compare_images: int | None = None, progress: bool = False, reference: Any = None,
                   spec: Any = None) -> dict[str, Any]:
    """Run ``path`` in its runtime over benchmark folders (default: scikit-image samples) and report
    quality, parity with PyTorch, the tiling effect, latency, memory, op profile and file size.

    ``reference`` is the PyTorch model to compare against (default: rebuilt from the sidecar's spec, or from
    ``spec`` when given).

    ``compare_images`` limits the PyTorch comparisons (parity, tiling) to the first N images of each folder
    (they cost two extra PyTorch passes per image); quality always covers every image.
    """
    import torch

    from . import runtimes

    path = Path(path)
    info = read_sidecar(path)
    tile = (int(info.input_size[0]), int(info.input_size[1]))
    ov = default_overlap(min(tile)) if overlap is None else int(overlap)
    if ov >= min(tile):
        raise ExportError(f"--overlap {ov} must be smaller than the artifact's input size {tile[0]}x{tile[1]}")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "artifact": _artifact_block(path, info),
        "runtime": {"name": runtimes.runtime_name(info), "where": "host", "machine": _machine(),
                    "versions": info.versions, "threads": threads},
        "status": "ran", "quality": None, "parity": None, "tiling": None, "latency_ms": None, "memory": None,
        "op_profile": None, "delegation": info.delegation, "graph": None, "notes": [],
    }
    if info.target != "executorch":
        report["graph"] = runtimes.graph_summary(path, info)
    try:
        run = scaled_runner(runtimes.load_runner(path, info, threads), float(info.input_range or 1))
    except runtimes.CoreMLNotRunnable as exc:
        report["status"] = "converted, not run"
        report["notes"].append(f"{exc}. No Core ML accuracy or latency is reported; the MIL summary above is "
                               "read from the .mlpackage. Run `edgesr check` on macOS for measurements.")
        return report

    if threads:
        torch.set_num_threads(threads)
    model = reference if reference is not None else reference_model(path, info, spec)
    model.eval()
    ref = _torch_runner(model)
    if info.precision == "int8":
        report["notes"].append("int8: parity is against the fake-quant PyTorch model of the int8 checkpoint (same quantization), so it measures the runtime, not the quantization error")
    report["quality"], report["parity"], report["tiling"] = _quality(run, ref, model, info, data, tile, ov,
                                                                     compare_images, progress)
    if info.precision == "fp32" and report["parity"].get("first_window") is not None:
        report["parity"]["fp64_reference"] = fp64_reference(run, model, report["parity"]["first_window"])
    report["parity"].pop("first_window", None)

    x = np.random.default_rng(0).random((1, 3, *tile), dtype=np.float32)
    report["latency_ms"] = {**runtimes.measure_latency(run, x, runs=runs), "threads": threads,
                            "input_size": list(tile), "measured_by": "wall clock around one runtime call, host"}
    if op_profile:
        if info.target == "executorch":
            report["op_profile"] = runtimes.executorch_op_profile(path, x, info, runs=min(5, runs))
        elif info.target == "onnx":
            report["op_profile"] = runtimes.onnx_op_profile(path, x, info, threads, runs=min(5, runs))
        else:
            report["notes"].append("no per-op latency on the host: the LiteRT Python interpreter has no op "
                                   "profiler (use `edgesr device-script` -> benchmark_model --enable_op_profiling)")
    if memory:
        report["memory"] = runtimes.measure_peak_memory(path, threads)
    return report


def _quality(run: Any, ref: Any, model: Any, info: ArtifactInfo, data: Sequence[str | Path] | None,
             tile: tuple[int, int], overlap: int, compare_images: int | None,
             progress: bool) -> tuple[dict, dict, dict]:
    import torch

    from ..data.folders import open_benchmark
    from ..data.io import to_tensor, to_uint8
    from ..data.samples import sample_benchmark
    from ..metrics import psnr_rgb, psnr_y, ssim_y

    scale = info.scale
    benches = [open_benchmark(d, scale) for d in data] if data else [sample_benchmark(scale)]
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise ExportError(f"two data folders share a name ({', '.join(names)}); results are keyed by folder name")
    quality: dict[str, Any] = {}
    worst, windows, parity_psnr, tiling_psnr, tiling_diff = 0.0, 0, [], [], 0.0
    first_window = None
    for bench in benches:
        per_image: dict[str, dict[str, float]] = {}
        for i, pair in enumerate(bench.pairs):
            hr, lr_img = pair.load_hr(), pair.load_lr()
            lr = to_tensor(lr_img).numpy()
            compare = compare_images is None or i < compare_images
            sr_rt, sr_pt, diff = run_tiled(run, lr, scale, tile, overlap, also=ref if compare else None)
            u_rt = to_uint8(torch.from_numpy(sr_rt))
            if u_rt.shape != hr.shape:
                raise ExportError(f"{bench.name}/{pair.name}: SR {u_rt.shape} vs HR {hr.shape}")
            per_image[pair.name] = {"psnr_y": psnr_y(u_rt, hr, scale), "ssim_y": ssim_y(u_rt, hr, scale)}
            if compare:
                if first_window is None:
                    first_window = first_tile(lr, tile)
                with torch.no_grad():
                    whole = model(torch.from_numpy(lr)).numpy()
                worst, windows = max(worst, diff), windows + count_windows(*lr.shape[2:], tile, overlap)
                u_pt, u_wh = (to_uint8(torch.from_numpy(a)) for a in (sr_pt, whole))
                parity_psnr.append(psnr_rgb(u_rt, u_pt, 0))
                tiling_psnr.append(psnr_rgb(u_pt, u_wh, 0))
                tiling_diff = max(tiling_diff, float(np.abs(sr_pt - whole).max()))
                per_image[pair.name]["torch_whole_psnr_y"] = psnr_y(u_wh, hr, scale)
                per_image[pair.name]["torch_tiled_psnr_y"] = psnr_y(u_pt, hr, scale)
            if progress:
                print(f"  {bench.name}/{pair.name}: {per_image[pair.name]['psnr_y']:.3f} dB")
        vals = list(per_image.values())
        quality[bench.name] = {
            "psnr_y": _mean(v["psnr_y"] for v in vals), "ssim_y": _mean(v["ssim_y"] for v in vals),
            "torch_whole_psnr_y": _mean(v["torch_whole_psnr_y"] for v in vals if "torch_whole_psnr_y" in v),
            # the runtime's own effect on accuracy: same windows, same padding, only the kernels differ
            "runtime_minus_torch_db": _mean(v["psnr_y"] - v["torch_tiled_psnr_y"] for v in vals
                                            if "torch_tiled_psnr_y" in v),
            # spread over images: a mean of 5 (Set5) cannot resolve 0.01 dB when single images move 0.02
            "runtime_minus_torch_sd_db": _sd(v["psnr_y"] - v["torch_tiled_psnr_y"] for v in vals
                                             if "torch_tiled_psnr_y" in v),
            "images": len(vals), "compared_images": sum("torch_whole_psnr_y" in v for v in vals),
            "per_image": per_image,
        }
    parity = {"reference": ("PyTorch fake-quant int8 model (the checkpoint it was exported from), same windows" if info.precision == "int8" else "PyTorch eval model (fp32), same windows"), "input_size": list(tile),
              "max_abs_diff": worst, "windows": windows, "first_window": first_window,
              "psnr_vs_torch_db": _mean(parity_psnr),
              "psnr_vs_torch_note": "uint8 RGB PSNR, runtime vs PyTorch on the same windows, mean over images "
                                    "(inf = identical)"}
    tiling = {"tile": list(tile), "overlap": overlap, "pad": "replicate",
              "psnr_tiled_vs_whole_db": _mean(tiling_psnr), "max_abs_diff_tiled_vs_whole": tiling_diff,
              "note": "PyTorch tiled (artifact-size windows) vs PyTorch on the whole image"}
    return quality, parity, tiling


def first_tile(lr: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """The image's top-left window at the artifact's input size (edge-padded when the image is smaller)."""
    th, tw = tile
    _, _, h, w = lr.shape
    if h < th or w < tw:
        lr = np.pad(lr, ((0, 0), (0, 0), (0, max(0, th - h)), (0, max(0, tw - w))), mode="edge")
    return np.ascontiguousarray(lr[:, :, :th, :tw])


def fp64_reference(run: Any, model: Any, window: np.ndarray) -> dict[str, Any]:
    """How far the runtime and PyTorch fp32 each are from the same model computed in float64, on one window.

    Tells fp32 rounding from a less accurate kernel: a runtime no further from float64 than PyTorch fp32 has a
    rounding-only parity gap; one much further has a kernel to look at (EIMN-A's .pte with XNNPACK's one-pass
    H·W mean: 4.4e-5 from float64 against PyTorch fp32's 3.4e-6; see ``edgesr.models.layers.spatial_mean``)."""
    import copy

    import torch

    try:
        m64 = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            exact = m64(torch.from_numpy(window).double()).numpy()
            torch32 = model(torch.from_numpy(window)).numpy()
        rt = run(window)
    except Exception as exc:  # a model with float32-only code paths: report why, keep the check
        return {"error": f"float64 reference failed: {type(exc).__name__}: {exc}"}
    return {"torch_fp32_max_abs": float(np.abs(torch32 - exact).max()),
            "runtime_max_abs": float(np.abs(rt - exact).max()),
            "runtime_vs_torch_max_abs": float(np.abs(rt - torch32).max()),
            "window": list(window.shape[2:]),
            "note": "max |output - float64 PyTorch| on the first compared window: runtime vs PyTorch fp32"}


def _mean(values: Any) -> float:
    vals = [float(v) for v in values]
    if not vals:
        return math.nan
    if any(math.isinf(v) for v in vals):
        finite = [v for v in vals if not math.isinf(v)]
        return float(np.mean(finite)) if finite else math.inf
    return float(np.mean(vals))


def _sd(values: Any) -> float:
    """Sample standard deviation of the finite values (nan for fewer than two)."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def _artifact_block(path: Path, info: ArtifactInfo) -> dict[str, Any]:
    block = {k: v for k, v in info.to_json().items()
             if k not in ("target_config", "versions", "delegation", "format", "version")}
    block["path"] = str(path)
    block["file_size_bytes"] = artifact_size(path)
    for role, name in info.files.items():
        p = resolve_beside(path, name)
        if p is not None and p.exists():
            block[f"{role}_size_bytes"] = artifact_size(p)
    return block


def format_report(r: dict[str, Any]) -> str:
    """The human summary printed by ``edgesr check`` / ``device-report``."""
    a = r["artifact"]
    lines = [f"{a.get('artifact')}: {a.get('target')} {a.get('precision')} {a.get('model')} x{a.get('scale')} "
             f"input {a['input_size'][0]}x{a['input_size'][1]}  ({r['runtime']['name']}, {r['runtime']['where']})",
             f"status: {r['status']}   file: {a.get('file_size_bytes', 0) / 1e6:.2f} MB"]
    if r.get("delegation"):
        d = r["delegation"]
        nd = ", ".join(f"{k} x{v}" for k, v in d.get("not_delegated", {}).items()) or "none"
        lines.append(f"delegation: {d['percent_delegated']:.1f}% of ops ({d['delegated_subgraphs']} subgraphs); "
                     f"not delegated: {nd}")
    for name, q in (r.get("quality") or {}).items():
        lines.append(f"{name:<20} PSNR-Y {q['psnr_y']:.3f}  SSIM-Y {q['ssim_y']:.4f}  "
                     f"(PyTorch whole image {q['torch_whole_psnr_y']:.3f} on {q['compared_images']}; "
                     f"runtime - PyTorch, same windows {q['runtime_minus_torch_db']:+.4f} dB, "
                     f"sd over images {q.get('runtime_minus_torch_sd_db', math.nan):.4f})  "
                     f"{q['images']} images")
    if r.get("parity"):
        p = r["parity"]
        line = f"parity vs PyTorch: max |diff| {p['max_abs_diff']:.2e}"
        if p.get("windows"):
            line += f" over {p['windows']} windows"
        if p.get("psnr_vs_torch_db") is not None:
            line += f", PSNR {p['psnr_vs_torch_db']:.2f} dB"
        lines.append(line)
        f64 = p.get("fp64_reference") or {}
        if "runtime_max_abs" in f64:
            lines.append(f"vs float64 PyTorch (one window): runtime {f64['runtime_max_abs']:.2e}, "
                         f"PyTorch fp32 {f64['torch_fp32_max_abs']:.2e}")
        elif f64:
            lines.append(f64["error"])
    if r.get("tiling"):
        t = r["tiling"]
        lines.append(f"tiling (PyTorch tiled vs whole): PSNR {t['psnr_tiled_vs_whole_db']:.2f} dB, "
                     f"max |diff| {t['max_abs_diff_tiled_vs_whole']:.2e}")
    if r.get("latency_ms"):
        lat = r["latency_ms"]
        med = "n/a" if lat.get("median") is None else f"{lat['median']:.2f}"
        p90 = "n/a" if lat.get("p90") is None else f"{lat['p90']:.2f}"
        lines.append(f"latency: median {med} ms, p90 {p90} ms ({lat.get('runs')} runs, "
                     f"{lat.get('threads') or 'default'} threads)")
    m = r.get("memory") or {}
    if "peak_rss_mb" in m:
        lines.append(f"memory: peak RSS {m['peak_rss_mb']} MB (+{m.get('delta_mb', '?')} MB over baseline)")
    elif m:
        lines.append(f"memory: {m.get('error') or m}")
    if r.get("op_profile"):
        ops = r["op_profile"]["ops"][:5]
        lines.append("top ops: " + "; ".join(f"{o['op']} {o['ms']:.2f} ms ({o['percent']:.0f}%)" for o in ops))
    g = r.get("graph")
    if g and g.get("ops"):
        top = ", ".join(f"{k} {v}" for k, v in list(g["ops"].items())[:8])
        lines.append(f"graph ({g['kind']}): {top}" + (f"; dtypes {g.get('output_dtypes')}" if "output_dtypes" in g
                                                      else ""))
    lines += [f"note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)


__all__ = ["SCHEMA", "plan_axis", "run_tiled", "default_overlap", "count_windows", "check_artifact",
           "reference_model", "format_report"]
